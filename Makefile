# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create a local virtual environment in .venv (once) and install nclab into it.
#
# torch: installed before nclab so that pip never resolves a bare `torch` on its own.
#   - no NVIDIA GPU (no nvidia-smi): torch==$(TORCH_VERSION), the CPU build where pip can find one
#     locally (it does on the project's machines; elsewhere set TORCH_PIP_ARGS, e.g. to a CPU wheel index).
#   - NVIDIA GPU present: the default (CUDA) build of torch==$(TORCH_VERSION).
PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
TORCH_PIP_ARGS ?=
BIN := $(VENV)/bin
STAMP := $(VENV)/.nclab-installed

.PHONY: demo test test-fast install browser clean bench

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q $(TORCH_PIP_ARGS) torch==$(TORCH_VERSION)
	$(BIN)/pip install -q -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/nclab demo

# Headless Chromium for the report's browser test (Debian package; skipped where it cannot be had).
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq >/dev/null 2>&1; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1) \
	  || echo "note: chromium not installed; the browser test will be skipped"; }

test: $(STAMP) browser
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not browser"

bench: $(STAMP)
	@for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
