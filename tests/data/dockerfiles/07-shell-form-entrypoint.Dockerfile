FROM python:3.12-slim
USER 1000
ENTRYPOINT python -m app
