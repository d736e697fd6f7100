FROM alpine:3.20
RUN apk add --no-cache curl=8.9.1-r1
USER 1000
ENTRYPOINT ["curl"]
