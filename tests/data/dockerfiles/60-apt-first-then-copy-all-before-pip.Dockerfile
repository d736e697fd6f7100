FROM python:3.12-slim
RUN apt-get update && apt-get install -y --no-install-recommends libpq5=15.10-0+deb12u1 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY . .
RUN pip install --no-cache-dir -r requirements.txt
USER 1000
CMD ["python", "app.py"]
