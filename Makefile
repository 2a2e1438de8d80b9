# Every target creates or refreshes .venv first; nothing else is needed on a fresh machine
# with Python 3.11. Versions are pinned by constraints.txt (regenerate with `make constraints`).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= out

.PHONY: demo test test-live lint bench golden constraints clean

# uv installs the same pinned set (-c constraints.txt) in about a minute where pip takes several:
# the uv on the PATH, else uv from PyPI bootstrapped into .venv (UV_VERSION), else pip with its
# progress bar. `make ... INSTALLER=pip` forces pip.
# --compile-bytecode: pip writes every module's bytecode at install and uv does not unless asked.
# Without it each command compiles the ~1,000 modules it imports (Pulumi's SDKs) from source on every
# run where PYTHONDONTWRITEBYTECODE is set, as it is on CI machines: `preview prod` took twice as long
# and 65 MB more memory. The venv runs the package as a user's `pip install` does.
UV_VERSION := 0.13.9
INSTALLER ?= uv
$(STAMP): pyproject.toml constraints.txt
	@echo "==> creating $(VENV) with $(PYTHON) ($$($(PYTHON) --version 2>&1)); another interpreter: make $(MAKECMDGOALS) PYTHON=/path/to/python3.11"
	$(PYTHON) -m venv $(VENV)
	@echo "==> installing slm-deploy and its pinned dependencies (constraints.txt, about 1.2 GB): about 1-2 minutes with uv, most of it writing bytecode; 5-10 with pip"
	@set -e; uv=$$(command -v uv || true); \
	if [ "$(INSTALLER)" = uv ] && [ -z "$$uv" ]; then \
	  $(BIN)/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION) && uv=$(BIN)/uv || uv=; \
	fi; \
	if [ "$(INSTALLER)" = uv ] && [ -n "$$uv" ]; then \
	  echo "$$uv pip install --compile-bytecode -p $(BIN)/python -c constraints.txt -e '.[dev]'"; \
	  "$$uv" pip install --compile-bytecode -p $(BIN)/python -c constraints.txt -e '.[dev]'; \
	else \
	  echo "$(BIN)/pip install -c constraints.txt -e '.[dev]'"; \
	  $(BIN)/pip install --progress-bar on --disable-pip-version-check -c constraints.txt -e '.[dev]'; \
	fi
	touch $@

# The demo runs the installed console script, exactly as a user does (`plan` exits 2 for a model
# that cannot fit: that refusal is part of the demo).
SLM := $(BIN)/slm-deploy
# The demo runs the bundled examples, which say what they are: the example image lock (whose digests
# no registry serves) and the example stacks (placeholder ranges, ids and registries). Both are
# refused unless named as examples; the demo names them.
demo: export SLM_EXAMPLE_STACKS = 1
demo: $(STAMP)
	$(SLM) plan --model phi-4-mini-instruct --gpu l4
	$(SLM) plan --model qwen3-8b --runtime ollama --cpu --cpus 8 --memory-gib 16
	$(SLM) plan --model qwen3-14b
	$(SLM) plan --model phi-4-mini-instruct --runtime onnx --cpu --memory-gib 16 --context 4096 --concurrency 2
	@echo "==> the next plan is refused on purpose (exit 2, 'does not fit'): the demo expects that refusal"
	$(SLM) plan --model qwen3-32b --gpu l4 --context 32768 || test $$? -eq 2
	@echo "==> the refusal above was expected; the demo goes on"
	$(BIN)/python -m tests.example_lock --check
	$(SLM) bundle examples/fleet.yaml --out $(OUT)/bundles --tar --allow-example-lock
	$(SLM) verify $(OUT)/bundles/store-0001
	$(SLM) preview dev --out $(OUT)/manifests/dev
	$(SLM) preview staging --out $(OUT)/manifests/staging
	rm -rf $(OUT)/onnx-image && $(SLM) image onnx staging --out $(OUT)/onnx-image
	$(SLM) preview prod --out $(OUT)/manifests/prod
	@echo "==> reviewing everything generated above with every validator and policy (about 20 s)"
	$(SLM) review $(OUT)/bundles/*/ $(OUT)/onnx-image --stack dev --stack staging --stack prod --sarif $(OUT)/review.sarif

# PYTEST_ARGS selects tests, e.g. `make test PYTEST_ARGS='-m tools'` (what .ci/run's variant without
# the Debian validators runs; a -m there replaces test's own).
# `make test` leaves out the slow live tests that bring bundles up on a Docker engine (markers
# live_compose and live_engines: about 35 minutes on 2 cores with the real engines); `make test-live` runs them, and
# .ci/run runs both.
PYTEST_ARGS ?=
LIVE := live_compose or live_engines
test: $(STAMP)
	$(BIN)/pytest -q -m "not ($(LIVE))" $(PYTEST_ARGS)

test-live: $(STAMP)
	$(BIN)/pytest -q -m "$(LIVE)" $(PYTEST_ARGS)

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
