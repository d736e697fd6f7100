FROM debian:bookworm
RUN sudo mkdir /data
USER 1000
