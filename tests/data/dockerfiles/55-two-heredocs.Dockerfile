# syntax=docker/dockerfile:1
FROM debian:bookworm
RUN <<FIRST bash <<SECOND
echo first
FIRST
echo second
SECOND
USER 1000
