# escape=`
FROM mcr.microsoft.com/windows/servercore:ltsc2022
SHELL ["powershell", "-Command"]
RUN New-Item -ItemType Directory C:\app ; `
    Write-Host done
COPY app.exe C:/app/
WORKDIR C:\app
ENTRYPOINT ["C:\\app\\app.exe"]
