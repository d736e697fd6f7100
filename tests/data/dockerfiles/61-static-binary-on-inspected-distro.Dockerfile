# The builder stands in for a static Go build (CGO_ENABLED=0); the final base's name is no
# known distribution: only inspecting it shows that it is one.
FROM dockwise-test/debian:bookworm AS build
ENV CGO_ENABLED=0
RUN cp /bin/true /app
FROM dockwise-test/debian:bookworm
COPY --from=build /app /usr/local/bin/app
USER 65534
ENTRYPOINT ["/usr/local/bin/app"]
