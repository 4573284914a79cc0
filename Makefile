# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create a local virtual environment in .venv (once) and install nclab into it.
#
# torch: installed before nclab so that pip never resolves a bare `torch` on its own (which would pull a
# multi-GB CUDA build), and only when the venv has none. `pip install torch==$(TORCH_VERSION)` takes the CPU
# build that the project's machines keep locally; on a CUDA machine it takes the CUDA build from PyPI. On another
# CPU-only machine pass a CPU wheel index, e.g. `make demo TORCH_PIP_ARGS="--index-url <cpu wheel index>"`.
PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
TORCH_PIP_ARGS ?=
BIN := $(VENV)/bin
# the datasets folder the shipped configs read ($NCLAB_DATA, docs/data.md); this project's machines keep it in
# ../shared/datasets. Set NCLAB_DATA yourself to point elsewhere.
ifneq ($(wildcard ../shared/datasets),)
export NCLAB_DATA ?= $(abspath ../shared/datasets)
endif
STAMP := $(VENV)/.nclab-installed
TEST_STAMP := $(VENV)/.nclab-test-installed

.PHONY: demo test test-fast install browser clean bench lint

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q $(TORCH_PIP_ARGS) torch==$(TORCH_VERSION)
	$(BIN)/pip install -q -e .
	@touch $(STAMP)

# the test suite also exercises the optional libraries (transformers, lightning, tensorboard, mlflow) and ruff
$(TEST_STAMP): $(STAMP)
	$(BIN)/pip install -q -e '.[test]'
	@touch $(TEST_STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/nclab demo

# Headless Chromium for the report's browser test (Debian package; skipped where it cannot be had).
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  echo "installing headless Chromium (Debian package chromium) for the report's browser test ..." && \
	  (apt-get update -qq >/dev/null 2>&1; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1) \
	  || echo "note: chromium not installed; the browser test will be skipped"; }

lint: $(TEST_STAMP)
	$(BIN)/ruff check src tests benchmarks examples

# one pytest worker per core (test files kept whole on one worker), each with one torch thread: torch's own
# threads per worker would oversubscribe the cores
PYTEST := OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n auto --dist loadfile

test: $(TEST_STAMP) browser lint
	$(PYTEST)

test-fast: $(TEST_STAMP)
	$(PYTEST) -m "not slow and not browser"

bench: $(STAMP)
	@for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
