FROM debian:bookworm
RUN cd /tmp && ls
USER 1000
