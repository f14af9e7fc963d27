# Two commands on a fresh machine: `make serve` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SERVE_CONFIG ?= serve_configs/local.yaml
PYTEST_ARGS ?=

.PHONY: install serve test test-slow test-soak lint typecheck bench bench-tools bench-stack clean gpu-wheels gpu-smoke gpu-smoke-dry

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
# INGRESS=haproxy puts HAProxy on 8000/8001 in front of the routers (direct ingress).
INGRESS ?= proxy
serve: install
	$(PY) -m app.local_stack $(SERVE_CONFIG) --num-gpus $(LOGICAL_GPUS) --ingress $(INGRESS)

lint: install
	$(VENV)/bin/ruff check app tests bench
	$(VENV)/bin/ruff format --check app tests bench
	@# Benchmarks have no tests (tests import no benchmark): at least every module imports.
	$(PY) -c "import importlib, pkgutil, bench; [importlib.import_module(m.name) for m in pkgutil.walk_packages(bench.__path__, 'bench.')]"

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

# NVIDIA's perf_analyzer (C++) for bench/stack.py, in a venv of its own: it ships only in
# tritonclient 2.44.0 (later wheels dropped it; the project's venv has a newer
# tritonclient) and needs Debian's libb64-0d and libcudart.so.12 (a PyPI wheel).
PERF_VENV ?= bench/.venv-perf
PERF_STAMP := $(PERF_VENV)/.installed
$(PERF_STAMP):
	$(PYTHON) -m venv $(PERF_VENV)
	$(PERF_VENV)/bin/python -m pip install -q --upgrade pip
	$(PERF_VENV)/bin/python -m pip install -q --no-deps tritonclient==2.44.0 \
		'nvidia-cuda-runtime-cu12>=12,<13'
	touch $(PERF_STAMP)

bench-tools: $(PERF_STAMP)
	@dpkg -s libb64-0d >/dev/null 2>&1 || { \
		apt-get update -qq && apt-get install -y -qq libb64-0d; } || { \
		echo "bench-tools: could not install libb64-0d (apt-get install libb64-0d as root)"; \
		exit 1; }
	@PERF_VENV=$(PERF_VENV) $(PERF_VENV)/bin/python -m bench.perf_analyzer --check

# Serve stack vs standalone tritonserver: perf_analyzer, then the project's own client.
BENCH_STACK_ARGS ?=
bench-stack: install
	PERF_VENV=$(PERF_VENV) $(PY) -m bench.stack $(BENCH_STACK_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info app/triton/_shim*.so

# ---- GPU smoke check (bench/gpu_smoke.py) for a borrowed GPU machine: Python 3.12 with
# torch, no Ray, no network, at most 64 MiB carried. Neither target touches $(VENV)'s
# install: gpu-wheels only downloads (pip of any Python works), gpu-smoke runs on the
# machine's own python3.12.
GPU_PIP ?= $(if $(wildcard $(VENV)/bin/pip),$(VENV)/bin/pip,pip3)
GPU_PYTHON ?= python3
WHL := .whl
# cp312 manylinux wheels the GPU machine lacks (versions as pyproject resolves them here).
GPU_WHEELS := nvidia-pytriton==0.7.0 pydantic==2.14.4 pydantic-core==2.50.5 \
	annotated-types==0.8.0 typing-inspection==0.4.5 ml-dtypes==0.5.4
gpu-wheels:
	mkdir -p $(WHL)/minilm-model
	$(GPU_PIP) download --no-deps --only-binary=:all: --python-version 3.12 \
		--implementation cp --abi cp312 --abi abi3 --abi none \
		--platform manylinux_2_35_x86_64 --platform manylinux_2_28_x86_64 \
		--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
		-d $(WHL) $(GPU_WHEELS)
	$(PY) -m bench.gpu_smoke_files $(WHL)/minilm-model
	du -sh $(WHL)

# Installs the wheels into .whl/site (not a venv), builds the C extension for this
# Python in place, runs the smoke check. GPU_SMOKE_ARGS=--cpu is the dry run.
GPU_SMOKE_ARGS ?=
gpu-smoke:
	$(GPU_PYTHON) -m pip install -q --no-deps --no-index --target $(WHL)/site $(WHL)/*.whl
	PYTHONPATH=$(CURDIR):$(CURDIR)/$(WHL)/site $(GPU_PYTHON) setup.py -q build_ext --inplace
	PYTHONPATH=$(CURDIR):$(CURDIR)/$(WHL)/site $(GPU_PYTHON) -m bench.gpu_smoke $(GPU_SMOKE_ARGS)

# The dry run on this machine's interpreter and venv (no install, no GPU).
gpu-smoke-dry:
	PYTHONPATH=$(CURDIR) $(PY) -m bench.gpu_smoke --cpu --requests 300
