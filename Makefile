# Two commands on a fresh machine: `make serve` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SERVE_CONFIG ?= serve_configs/local.yaml
PYTEST_ARGS ?=

.PHONY: install serve test test-slow lint typecheck bench clean

$(STAMP): pyproject.toml setup.py app/triton/_shim.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# A local Ray head that declares LOGICAL_GPUS logical GPUs (fractional packing on CPU),
# on its own port so it does not collide with another local cluster; it is stopped
# again when `serve run` ends (Ctrl-C). Token auth is off for this single-user local head.
LOGICAL_GPUS ?= 2
RAY_PORT ?= 6390
serve: install
	@RAY_AUTH_MODE=disabled bash -c 'trap "$(VENV)/bin/ray stop --force >/dev/null 2>&1" EXIT; \
	  $(VENV)/bin/ray start --head --node-ip-address=127.0.0.1 --port=$(RAY_PORT) \
	    --num-gpus=$(LOGICAL_GPUS) \
	    --include-dashboard=false --disable-usage-stats >/dev/null && \
	  $(VENV)/bin/serve run --address 127.0.0.1:$(RAY_PORT) $(SERVE_CONFIG)'

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

bench: install
	$(PY) -m bench.engine

clean:
	rm -rf $(VENV) build *.egg-info app/triton/_shim*.so
