FROM debian:bookworm AS app
COPY --from=app /etc/hostname /copy
USER 1000
