# Two commands do everything on a fresh machine (Python 3.11, nothing installed): `make demo` and `make test`.
# Each creates/updates the project venv (.venv) with the pinned dependencies on first use; `make test` also installs
# Debian's chromium for the browser test of the documentation site.
SHELL := /bin/bash
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
REPORT ?= ntk-report
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TRANSFORMERS_VERBOSITY ?= error
export TOKENIZERS_PARALLELISM ?= false
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: venv browser demo test test-lowest test-slow experiments docs docs-serve bench gpu-check clean

venv: $(STAMP)

$(STAMP): requirements.txt requirements-data.txt setup.py settings.ini
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
	set -o pipefail; $(BIN)/python -m pip install -q -r requirements.txt 2>&1 | { grep -v "^WARNING: Location" || true; }
	set -o pipefail; $(BIN)/python -m pip install -q --no-deps -r requirements-data.txt 2>&1 | { grep -v "^WARNING: Location" || true; }
	set -o pipefail; $(BIN)/python -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | { grep -v "^WARNING: Location" || true; }
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

# Debian's chromium for the browser test (Playwright drives it; no browser download).
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  echo "installing Debian's chromium for the browser test"; \
	  $$SUDO apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

# The main job on the embedded default: SmolLM2-135M, rt-sentiment, attention parameters.
demo: venv
	$(BIN)/ntk-finetune analyze --out $(REPORT)
	@echo "open $(REPORT)/report.html"

# The whole suite: notebooks/library sync, every notebook run once (minus slow/gpu cells; the executed copies feed the
# docs), the documentation site built from them, and pytest (minus slow/gpu), which includes the browser test.
test: venv browser
	$(BIN)/python tools/check_sync.py
	$(BIN)/python tools/run_notebooks.py --n_workers 2
	$(BIN)/python tools/build_docs.py
	$(BIN)/python -m pytest tests -q -m "not slow and not gpu" -p no:cacheprovider

# The declared version floors at their lowest allowed versions (uv lowest-direct), on a smoke subset.
test-lowest: venv
	bash tools/test_lowest.sh

test-slow: venv
	$(BIN)/nbdev_test --n_workers 1 --flags slow
	$(BIN)/python -m pytest tests -q -m "slow and not gpu"

# The full-size experiment and theory runs (hours on 2 CPU cores); each writes its results/*.json.
experiments: venv
	$(BIN)/nbdev_test --n_workers 1 --flags slow --do_print --path nbs/experiments
	$(BIN)/nbdev_test --n_workers 1 --flags slow --do_print --path nbs/theory

# The website with every notebook's outputs: _proc/_docs/index.html
docs: venv
	$(BIN)/python tools/run_notebooks.py --n_workers 2
	$(BIN)/python tools/build_docs.py

# The built site at http://localhost:8000 (its search reads search.json, which browsers refuse over file://).
docs-serve:
	test -f _proc/_docs/index.html || $(MAKE) docs
	$(BIN)/python -m http.server 8000 --directory _proc/_docs

bench: venv
	$(BIN)/python bench/entk.py

# On a machine with a CUDA GPU: the gpu-marked tests, the GPU rows of the kernel benchmark and the experiments' paper
# presets at their full sizes (GPT-Neo shapes, random weights; BENCHMARKS.md).
# Runs in any Python that has a CUDA build of torch and this package installed (GPU_PY=...; default: the project venv
# if there is one), since the venv's pinned torch is a CPU build.
GPU_PY ?= $(if $(wildcard $(BIN)/python),$(BIN)/python,python3)
gpu-check:
	@$(GPU_PY) -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu-check: this Python has no CUDA torch (set GPU_PY=...)')"
	$(GPU_PY) -m pytest tests -q -m gpu -p no:cacheprovider
	$(GPU_PY) bench/entk.py --gpu
	$(GPU_PY) bench/paper_presets.py --budget 900

clean:
	rm -rf _proc _proc_src _exec _docs test-artifacts .pytest_cache
