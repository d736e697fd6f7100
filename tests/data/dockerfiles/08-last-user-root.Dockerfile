FROM debian:bookworm
USER 1000
USER root
CMD ["bash"]
