FROM debian:latest
USER 1000
CMD ["bash"]
