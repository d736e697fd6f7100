FROM debian:bookworm
RUN mkdir /data
RUN touch /data/file
USER 1000
