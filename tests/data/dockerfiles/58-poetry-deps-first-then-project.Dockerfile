FROM python:3.12-slim
WORKDIR /app
COPY pyproject.toml poetry.lock ./
RUN pip install --no-cache-dir poetry==1.8.3 && poetry install --no-root
COPY . .
RUN poetry install --only-root
USER 1000
CMD ["python", "-m", "app"]
