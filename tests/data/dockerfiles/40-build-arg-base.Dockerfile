ARG BASE=debian:bookworm-slim
FROM ${BASE}
USER 1000
CMD ["bash"]
