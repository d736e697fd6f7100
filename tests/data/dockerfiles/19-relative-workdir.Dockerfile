FROM debian:bookworm
WORKDIR app
USER 1000
