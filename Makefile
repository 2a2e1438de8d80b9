# Every target creates or refreshes .venv first; nothing else is needed on a fresh machine
# with Python 3.11. Versions are pinned by constraints.txt (regenerate with `make constraints`).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= out

.PHONY: demo test lint bench golden constraints clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $@

demo: $(STAMP)
	$(BIN)/python -m generator.demo $(OUT)

test: $(STAMP)
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check generator stacks policies tests
	$(BIN)/ruff format --check generator stacks policies tests
	$(BIN)/mypy generator stacks policies

bench: $(STAMP)
	$(BIN)/python -m generator.bench

golden: $(STAMP)
	$(BIN)/python -m tests.golden

constraints: $(STAMP)
	$(BIN)/pip freeze --exclude-editable > constraints.txt

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache .mypy_cache .ruff_cache
