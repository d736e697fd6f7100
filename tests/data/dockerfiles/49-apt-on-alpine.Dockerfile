FROM dockwise-test/alpine:1
RUN apt-get update && apt-get install -y --no-install-recommends curl=8.9.1-r1 && rm -rf /var/lib/apt/lists/*
USER 65534
