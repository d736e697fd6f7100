FROM dockwise-test/debian:bookworm AS rootfs
RUN mkdir -p /out && cp -a /bin /lib /lib64 /usr /out/

FROM scratch
COPY --from=rootfs /out/ /
RUN echo built > /built.txt
USER 65534
ENTRYPOINT ["/usr/bin/cat", "/built.txt"]
