FROM debian:bookworm-slim
WORKDIR /srv
EXPOSE 80 443/udp
USER 1000
ENTRYPOINT ["/srv/server"]
CMD ["--port", "80"]
