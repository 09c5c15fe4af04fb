# One-command set-up and the course's entry points. Every target creates .venv on first use.
#   make demo   set up, then run notebooks 01->05 with papermill (params/demo.yaml)
#   make test   set up, then the whole test suite (make test-fast: the unit tests only, in minutes)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
# The tested lock; `make CONSTRAINTS= setup` resolves freely (e.g. on a newer Python).
CONSTRAINTS ?= constraints.txt
# torch goes in first, pinned by the lock's torch line but overridable: make TORCH_SPEC='torch==2.6.0' setup
# (the lock's torch line is then left out, so the rest of the install keeps the torch you chose).
TORCH_SPEC ?= $(or $(shell grep -m1 '^torch==' constraints.txt 2>/dev/null),torch==2.13.0)
PARAMS ?= params/demo.yaml
RUN_DIR ?= runs/demo
HOST ?= 127.0.0.1
BIN := $(VENV)/bin
PY := $(BIN)/python
export PATH := $(abspath $(BIN)):$(PATH)
# No MPLBACKEND here: kernels started under make (demo, lab, check) inherit this environment, and a
# non-interactive backend such as Agg would make every plt.show() in a notebook draw nothing.
# JupyterLab serves the repository root (lessons, exercises and solutions all open) and opens on the lessons;
# LAB_ARGS adds flags, e.g. make lab LAB_ARGS=--port=8899
LAB_ARGS ?=
# The team tracking server (make mlflow-server): any SQLAlchemy URI for the store, e.g.
#   make mlflow-server MLFLOW_STORE=postgresql://mlflow@db/mlflow HOST=0.0.0.0 AUTH=1
# A URI with a password: export MLFLOW_BACKEND_STORE_URI instead (a command line is visible to `ps`).
# Beyond 127.0.0.1 it needs AUTH=1 and MLFLOW_AUTH_ADMIN_PASSWORD in the environment (never on a command line).
MLFLOW_STORE ?=
MLFLOW_ARTIFACTS ?= ./mlartifacts
MLFLOW_PORT ?= 5000
AUTH ?=

.PHONY: torch-spec setup demo test test-fast lab mlflow-ui mlflow-server tensorboard check exercises sweep benchmarks gpu-check clean

setup: $(VENV)/.installed

torch-spec:  # what `make setup` installs first (tests/test_environment.py reads it)
	@echo $(TORCH_SPEC)

$(VENV)/.installed: pyproject.toml $(wildcard $(CONSTRAINTS))
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(if $(CONSTRAINTS),grep -v '^torch==' $(CONSTRAINTS) > $(VENV)/constraints-no-torch.txt)
	$(PY) -m pip install --quiet $(if $(CONSTRAINTS),-c $(VENV)/constraints-no-torch.txt) -e ".[course,dev]"
	@touch $@

demo: setup
	$(PY) -m pipeline.course demo --params $(PARAMS) --run-dir $(RUN_DIR)

test: setup
	$(PY) -m pytest -p no:cacheprovider $(PYTEST_ARGS)

# Unit tests only (no subprocess, server, notebook or browser): the tier to run all day. A fast-tier test that
# starts a process fails and says so (tests/conftest.py).
test-fast: setup
	PIPELINE_TEST_TIER=fast $(PY) -m pytest -p no:cacheprovider -m "not slow" $(PYTEST_ARGS)

lab: setup
	$(BIN)/jupyter lab --ip=$(HOST) --no-browser $(if $(filter 0,$(shell id -u)),--allow-root) \
	  --ServerApp.root_dir=$(CURDIR) --LabApp.default_url=/lab/tree/notebooks $(LAB_ARGS)

mlflow-ui: setup
	$(BIN)/mlflow ui --host $(HOST) --port 5000 --backend-store-uri sqlite:///mlflow.db

mlflow-server: setup
	$(PY) -m pipeline.server --host $(HOST) --port $(MLFLOW_PORT) $(if $(MLFLOW_STORE),--backend-store-uri $(MLFLOW_STORE)) \
	  --artifacts-destination $(MLFLOW_ARTIFACTS) $(if $(AUTH),--auth)

tensorboard: setup
	$(BIN)/tensorboard --host $(HOST) --port 6006 --logdir_spec runs:runs,checkpoints:checkpoints

check: setup
	@test -n "$(EX)" || { echo "usage: make check EX=01" >&2; exit 2; }
	$(PY) -m pipeline.course check $(EX)

exercises: setup
	$(PY) -m pipeline.course exercises

sweep: setup
	$(PY) -m pipeline.course sweep --params $(PARAMS) --learning-rates 0.0003,0.001,0.003 --run-dir runs/sweep

benchmarks: setup
	$(PY) benchmarks/bench_prepare.py
	OMP_NUM_THREADS=1 $(PY) benchmarks/bench_train.py
	$(PY) benchmarks/bench_cli.py

# The CUDA path (tests/test_cuda.py and bench_train on the GPU); one line and exit 0 where there is no GPU.
gpu-check: setup
	$(PY) benchmarks/gpu_check.py

clean:
	rm -rf runs reports processed_data checkpoints mlflow.db mlartifacts
