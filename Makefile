# `make test` and `make sim` are the README's two commands: each creates or updates the
# local virtualenv (.venv) from pyproject.toml first, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Where the shared traces live; override to point at another copy.
GPUCAAS_DATA ?= $(abspath ../shared/data)
SIM_NODES ?= 6
# `make up`: the embedded control plane (API + dashboard on LISTEN, state in STATE_DIR).
STATE_DIR ?= .gpucaas
LISTEN ?= 127.0.0.1:8080
NODES ?= 100
# sandbox: each container's command runs in a bubblewrap sandbox (Debian/Ubuntu package
# bubblewrap): an unprivileged user in its own namespaces, read-only host, state dir hidden; no
# image pulls. podman/docker/auto on hosts whose engine can pull and run images
# (`make up EXECUTOR=auto`). The unisolated process executor needs
# `make up EXECUTOR=process UP_ARGS=--unsafe-process` (development only).
EXECUTOR ?= sandbox
UP_ARGS ?=

.PHONY: test test-e2e check sim up bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

check: $(STAMP)
	PATH=$(abspath $(BIN)):$$PATH scripts/check

test: check
	GPUCAAS_DATA=$(GPUCAAS_DATA) $(BIN)/python -m pytest

# The Kubernetes end-to-end tests alone (make test runs them too): a control plane built
# from source with Go (scripts/k8s-testbed; ~12 min once, cached in ~/.cache/gpucaas/k8s).
test-e2e: $(STAMP)
	scripts/k8s-testbed build
	$(BIN)/python -m pytest tests/e2e

sim: $(STAMP)
	$(BIN)/gpucaas sim --trace $(GPUCAAS_DATA)/alibaba-gpu-v2023/openb_pod_list_default.csv \
		--nodes $(SIM_NODES) --board hgx-h100-8 --policy all --mode dynamic

up: $(STAMP)
	@if [ "$(EXECUTOR)" = sandbox ] && ! command -v bwrap >/dev/null 2>&1; then \
		echo "make up: the sandbox executor needs bubblewrap (bwrap), which is not on PATH." >&2; \
		echo "  install it: sudo apt-get install bubblewrap (Debian/Ubuntu), sudo dnf install bubblewrap (Fedora)" >&2; \
		echo "  or use a container engine: make up EXECUTOR=podman" >&2; \
		exit 1; \
	fi
	$(BIN)/gpucaas up --state-dir $(STATE_DIR) --listen $(LISTEN) --nodes $(NODES) \
		--executor $(EXECUTOR) $(UP_ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_placement.py
	GPUCAAS_DATA=$(GPUCAAS_DATA) $(BIN)/python benchmarks/bench_sim.py
	$(BIN)/python benchmarks/bench_fabric.py
	$(BIN)/python benchmarks/bench_control.py
	$(BIN)/python benchmarks/bench_kubernetes.py
	$(BIN)/python benchmarks/bench_real_node.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
