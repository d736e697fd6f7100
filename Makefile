# Two commands do all set-up:  `make run`  (the bot)  and  `make test`  (the whole suite).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run chat test lint bench clean

$(BIN)/dockwise: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

# Runs every adapter whose credentials are set; the shell adapter when none are.
run: $(BIN)/dockwise
	$(BIN)/dockwise run

chat: $(BIN)/dockwise
	$(BIN)/dockwise chat

# Lint, type-check, start the real services the tests need, run every test, stop services.
test: $(BIN)/dockwise
	bash .ci/test

lint: $(BIN)/dockwise
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy

bench: $(BIN)/dockwise
	$(BIN)/python bench/qa_eval.py && $(BIN)/python bench/qa_latency.py

clean:
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache
