FROM debian:bookworm
COPY --from=builder /out/app /app
USER 1000
