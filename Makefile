# Set-up and the two entry points of the README. Torch is installed first, pinned, so that
# no dependency pulls a CUDA build of several GB.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install quickstart test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

install: $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[cpu,dev]'

quickstart: install
	$(BIN)/compress run recipes/quickstart.yaml

test: install
	$(BIN)/python -m pytest -q -x --durations=10
