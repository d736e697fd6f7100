FROM debian:bookworm
RUN apt-get update && apt-get install -y --no-install-recommends gcc=4:12.2.0-3 libc6-dev=2.36-9+deb12u7 && rm -rf /var/lib/apt/lists/*
COPY hello.c /src/hello.c
USER 1000
