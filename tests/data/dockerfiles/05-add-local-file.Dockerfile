FROM debian:bookworm
ADD app.tar.gz /opt/
ADD config.yml /etc/app/
USER 1000
