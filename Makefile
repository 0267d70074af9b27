# edgeq: the two set-up commands of the README, and a few helpers.
#   make demo   install into .venv, then train -> quantize -> evaluate -> deploy -> bench (local device)
#   make test   install into .venv (with test tools), then run the whole test suite
#   make test-fast  the unit tests that train, convert and build nothing (marker `slow` left out)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
OUT    ?= runs/mnist
HOST   ?= local

.PHONY: demo test test-fast install clean

$(BIN)/.edgeq-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[host,device,dev]'
	touch $@

install: $(BIN)/.edgeq-installed

demo: install
	$(BIN)/edgeq run --out $(OUT) --host $(HOST)

test: install
	PATH="$(abspath $(BIN)):$$PATH" bash tests/run.sh

test-fast: install
	$(BIN)/pytest -q tests/unit -m "not slow"

clean:
	rm -rf $(VENV) runs reports .pytest_cache
