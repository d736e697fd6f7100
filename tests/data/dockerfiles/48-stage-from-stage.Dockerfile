FROM debian:bookworm-slim AS base
RUN useradd --no-log-init -u 10001 app
USER 10001

FROM base AS final
COPY app /app
CMD ["/app"]
