FROM debian:bookworm AS tools
RUN echo tools \
    > /tools.txt

FROM debian:bookworm AS docs
RUN echo docs > /docs.txt

FROM debian:bookworm-slim
COPY --from=tools /tools.txt /tools.txt
USER 1000
CMD ["cat", "/tools.txt"]
