FROM dockwise-test/debian:bookworm
RUN useradd --no-log-init --uid 10002 --create-home builder
COPY greeting.txt /home/builder/greeting.txt
USER 10002
EXPOSE 9090/tcp 5353/udp
ENTRYPOINT ["/bin/cat"]
CMD ["/home/builder/greeting.txt"]
