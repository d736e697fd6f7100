FROM dockwise-test/debian:bookworm AS build
RUN echo built > /out.txt

FROM dockwise-test/static:1
COPY --from=build /out.txt /out.txt
USER 65534
