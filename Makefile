# kubetrain developer entry points. `make demo` and `make test` are the whole set-up on
# a fresh machine: each installs what is missing (venv, Go builds), idempotently.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# What the demo runs; skaffold and its helm 3 are built for the tests only.
DEMO_BINARIES := etcd kubernetes minio helm containerd runc coredns traefik registry pause

.PHONY: install binaries test test-unit demo bench platform-up platform-down platform-status lint format manifests chart-readme clean

install: $(STAMP) ## create .venv with everything for development and tests

$(STAMP): pyproject.toml requirements/*.txt
	@tools/harness/platform/ensure-system.sh
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --disable-pip-version-check uv==0.13.8
	$(BIN)/uv pip install --python $(BIN)/python -q -c requirements/constraints.txt -r requirements/dev.txt -e .
	@touch $@

binaries: ## build etcd, kubernetes, containerd, runc, coredns, traefik, registry, minio, helm, skaffold from source once per version (cached)
	@tools/harness/platform/build.sh

test: install binaries ## the full suite, real servers included
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-unit: install ## only tests that need no platform
	$(BIN)/python -m pytest -m "not platform" $(PYTEST_ARGS)

demo: install ## the local demo: platform, chart, dataset, training, serving
	@tools/harness/platform/build.sh $(DEMO_BINARIES)
	$(BIN)/python -m kubetrain_platform.demo

bench: install binaries ## benchmarks; each figure is printed next to a baseline from the same run
	$(BIN)/python tools/harness/bench/run.py $(BENCH_ARGS)

platform-up: install ## start the control plane, MinIO, MLflow and a real node (containerd, kubelet, kube-proxy, CoreDNS, Traefik)
	@tools/harness/platform/build.sh $(DEMO_BINARIES)
	$(BIN)/kubetrain-platform up

platform-down: ## stop everything and undo the node's host changes (bridge, iptables, mounts, cgroups, sysctls)
	@test -x $(BIN)/kubetrain-platform && $(BIN)/kubetrain-platform down || echo "platform: nothing installed, nothing running"

platform-status: ## what runs and where
	@$(BIN)/kubetrain-platform status

lint: install ## ruff (lint + format check), mypy on the core modules, import-linter layers
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy operator/kubetrain_operator operator/kubetrain_contract tools/kubetrain_data tools/harness/kubetrain_platform tools/harness/kubetrain_loadgen trainer/kubetrain_trainer serving/kubetrain_serving tools/harness/gen_manifests.py tools/harness/gen_chart_readme.py
	PYTHONPATH=operator:trainer:serving:tools:tools/harness $(BIN)/lint-imports --no-cache

manifests: install ## regenerate manifests/ from charts/kubetrain (a test fails when they drift)
	$(BIN)/python tools/harness/gen_manifests.py

chart-readme: install ## regenerate charts/kubetrain/README.md from values.yaml (a test fails when it drifts)
	$(BIN)/python tools/harness/gen_chart_readme.py

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean: platform-down
	rm -rf .kubetrain
