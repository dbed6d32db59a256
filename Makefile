# Two commands do everything on a fresh machine (Python 3.11, nothing installed): `make demo` and `make test`.
# Each creates/updates the project venv (.venv) with the pinned dependencies on first use.
SHELL := /bin/bash
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TRANSFORMERS_VERBOSITY ?= error
export TOKENIZERS_PARALLELISM ?= false
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: venv demo test test-fast test-slow docs bench clean

venv: $(STAMP)

$(STAMP): requirements.txt requirements-data.txt setup.py settings.ini
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
	set -o pipefail; $(BIN)/python -m pip install -q -r requirements.txt 2>&1 | { grep -v "^WARNING: Location" || true; }
	set -o pipefail; $(BIN)/python -m pip install -q --no-deps -r requirements-data.txt 2>&1 | { grep -v "^WARNING: Location" || true; }
	set -o pipefail; $(BIN)/python -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | { grep -v "^WARNING: Location" || true; }
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

demo: venv
	$(BIN)/ntk-finetune demo

# The whole suite: notebooks/library sync check, every notebook (minus slow/gpu cells), pytest (minus slow/gpu).
test: venv
	$(BIN)/python tools/check_sync.py
	$(BIN)/nbdev_test --n_workers 2 --do_print --timing
	$(BIN)/python -m pytest tests -q -m "not slow and not gpu" -p no:cacheprovider

test-slow: venv
	$(BIN)/nbdev_test --n_workers 1 --flags slow
	$(BIN)/python -m pytest tests -q -m "slow and not gpu"

docs: venv
	$(BIN)/python tools/build_docs.py

bench: venv
	$(BIN)/python bench/entk.py

clean:
	rm -rf _proc _docs .pytest_cache
