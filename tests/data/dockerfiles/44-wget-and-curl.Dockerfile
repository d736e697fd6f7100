FROM debian:bookworm
RUN wget -q https://example.invalid/a && curl -fsSO https://example.invalid/b
USER 1000
