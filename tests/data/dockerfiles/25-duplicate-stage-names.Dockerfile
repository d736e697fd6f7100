FROM debian:bookworm AS build
RUN echo one > /one
FROM debian:bookworm AS build
COPY --from=0 /one /one
USER 1000
