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

# The demo runs the installed console script, exactly as a user does (`plan` exits 2 for a model
# that cannot fit: that refusal is part of the demo).
SLM := $(BIN)/slm-deploy
demo: $(STAMP)
	$(SLM) plan --model phi-4-mini-instruct --gpu l4
	$(SLM) plan --model qwen3-8b --runtime ollama --cpu --cpus 8 --memory-gib 16
	$(SLM) plan --model qwen3-14b
	$(SLM) plan --model phi-4-mini-instruct --runtime onnx --cpu --memory-gib 16 --context 4096 --concurrency 2
	$(SLM) plan --model qwen3-32b --gpu l4 --context 32768 || test $$? -eq 2
	$(BIN)/python -m tests.example_lock --check
	$(SLM) bundle examples/fleet.yaml --out $(OUT)/bundles --tar
	$(SLM) verify $(OUT)/bundles/store-0001
	$(SLM) preview dev --out $(OUT)/manifests/dev
	$(SLM) preview staging --out $(OUT)/manifests/staging
	rm -rf $(OUT)/onnx-image && $(SLM) image onnx staging --out $(OUT)/onnx-image
	$(SLM) preview prod --out $(OUT)/manifests/prod
	$(SLM) review $(OUT)/bundles/*/ $(OUT)/onnx-image --stack dev --stack staging --stack prod --sarif $(OUT)/review.sarif

test: $(STAMP)
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check slm_deploy policies __main__.py tests
	$(BIN)/ruff format --check slm_deploy policies __main__.py tests
	$(BIN)/mypy slm_deploy

bench: $(STAMP)
	$(BIN)/python -m slm_deploy.bench

golden: $(STAMP)
	$(BIN)/python -m tests.golden

constraints: $(STAMP)
	$(BIN)/pip freeze --exclude-editable > constraints.txt

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache .mypy_cache .ruff_cache
