FROM debian:bookworm
USER 1000
ENTRYPOINT ["echo"]
ENTRYPOINT ["printf"]
