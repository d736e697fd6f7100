# A second image on the same base: shares the Debian base layer with the toolchain image.
FROM dockwise-test/debian:bookworm
RUN useradd --create-home app
USER app
