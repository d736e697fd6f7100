FROM debian:12
EXPOSE 70000
HEALTHCHECK CMD ["true"]
HEALTHCHECK CMD ["false"]
RUN zypper dist-upgrade
USER 1
