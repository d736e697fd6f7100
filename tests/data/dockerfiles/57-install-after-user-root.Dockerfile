FROM dockwise-test/app:1
USER root
RUN mkdir -p /srv/data && chown 10001 /srv/data
USER 10001
