# Set-up and the two entry points of the README. Torch is installed first, pinned, so that
# no dependency pulls a CUDA build of several GB; every other package is pinned by the lock.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH := torch==2.13.0
TORCH_INDEX ?=# where no CPU wheel of torch is at hand: TORCH_INDEX='--index-url https://download.pytorch.org/whl/cpu'
LOCK := requirements/lock-cpu.txt
LOCK_VENV := .venv-lock

.PHONY: install quickstart test test-fast lock

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

install: $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c $(LOCK) $(TORCH) $(TORCH_INDEX)
	$(BIN)/pip install -q -c $(LOCK) -e '.[cpu,dev,serve,peft,openvino]'

quickstart: install
	$(BIN)/compress run recipes/quickstart.yaml

test: install
	$(BIN)/python -m pytest -q -x --durations=10

test-fast: install  # the inner loop: everything but the end-to-end and subprocess tests
	$(BIN)/python -m pytest -q -x -m "not slow"

# Refresh the lock from pyproject.toml (extras cpu + dev + serve + peft + openvino, Python 3.11, torch as pinned above,
# CUDA packages left out): newest versions inside pyproject's ranges. Run `make test` after it.
lock:
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install -q uv
	echo "$(TORCH)" > $(LOCK_VENV)/torch.txt
	$(LOCK_VENV)/bin/uv pip compile pyproject.toml --extra cpu --extra dev --extra serve --extra peft --extra openvino --python-version 3.11 --upgrade \
		-c $(LOCK_VENV)/torch.txt --excludes requirements/no-cuda.txt --custom-compile-command "make lock" -o $(LOCK)
