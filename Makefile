# Two commands on a fresh machine: `make serve` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SERVE_CONFIG ?= serve_configs/local.yaml
PYTEST_ARGS ?=

.PHONY: install serve test test-slow test-soak lint typecheck bench clean

$(STAMP): pyproject.toml setup.py app/triton/_shim.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# A private local Ray cluster that declares LOGICAL_GPUS logical GPUs (fractional
# packing on CPU), torn down with `make serve` itself (Ctrl-C): other Ray clusters of
# the user are left alone.
LOGICAL_GPUS ?= 2
serve: install
	$(PY) -m app.local_stack $(SERVE_CONFIG) --num-gpus $(LOGICAL_GPUS)

lint: install
	$(VENV)/bin/ruff check app tests bench
	$(VENV)/bin/ruff format --check app tests bench

typecheck: install
	$(VENV)/bin/mypy

# The autoscaling tests are marked slow but take ~3 min on 2 cores, so they run here too;
# test-slow keeps the soak and leak tests.
test: lint typecheck
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)
	$(PY) -m pytest -m slow tests/integration/autoscaling $(PYTEST_ARGS)

test-slow: install
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

# Mixed traffic for SOAK_SECONDS (30 min by default) against a local cluster: nothing
# lost or corrupted, worker memory flat, no leaked processes (tests/integration/soak).
SOAK_SECONDS ?= 1800
test-soak: install
	SOAK_SECONDS=$(SOAK_SECONDS) $(PY) -m pytest -m slow -s tests/integration/soak $(PYTEST_ARGS)

bench: install
	$(PY) -m bench.engine

clean:
	rm -rf $(VENV) build *.egg-info app/triton/_shim*.so
