FROM scratch
ADD rootfs.tar.xz /
RUN apt-get update && apt-get install -y --no-install-recommends curl=7.88.1-10+deb12u8 && rm -rf /var/lib/apt/lists/*
USER 1000
CMD ["bash"]
