FROM debian:bookworm
RUN touch $NAME && echo finished
USER 1000
