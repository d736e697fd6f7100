FROM debian:bookworm
USER 1000
CMD ["echo", "a"]
CMD ["echo", "b"]
