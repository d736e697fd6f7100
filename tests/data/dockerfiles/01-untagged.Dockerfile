FROM ubuntu
USER 65534
CMD ["sleep", "infinity"]
