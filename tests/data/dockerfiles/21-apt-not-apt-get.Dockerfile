FROM debian:bookworm
RUN apt install -y curl
USER 1000
