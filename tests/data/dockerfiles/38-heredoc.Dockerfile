# syntax=docker/dockerfile:1
FROM debian:bookworm
RUN <<EOT bash
set -e
echo hello > /greeting
EOT
USER 1000
CMD ["cat", "/greeting"]
