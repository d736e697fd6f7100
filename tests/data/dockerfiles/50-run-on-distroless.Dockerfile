FROM dockwise-test/distroless:1
RUN ["/hello"]
RUN echo hello > /tmp/greeting
