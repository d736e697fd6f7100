FROM debian
RUN <<EOF
echo hi
EOF
RUN cd /tmp && ls
USER root
