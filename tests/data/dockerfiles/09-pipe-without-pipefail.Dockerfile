FROM debian:bookworm
RUN curl -fsSL https://example.invalid/install.sh | bash
USER 1000
