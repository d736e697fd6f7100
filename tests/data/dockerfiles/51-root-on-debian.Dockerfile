FROM dockwise-test/debian:bookworm
RUN echo hello > /greeting
EXPOSE 9090
ENTRYPOINT ["/bin/cat"]
CMD ["/greeting"]
