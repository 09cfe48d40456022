# clipnb — rebuild the report (`make book`) or run the tests (`make test`) from nothing.
# Both create .venv from requirements.lock.txt on first use.

PYTHON  ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
PROFILE ?= embedded
DATA    ?=
STUDY   ?=
# Where sweeps' trials run: local (in-process) or ray (RAY_ADDRESS= a cluster; empty: a local Ray).
EXECUTOR    ?= local
RAY_ADDRESS ?=

export CLIPNB_CACHE ?= $(CURDIR)/.cache/clipnb
export MPLBACKEND := Agg
export PYDEVD_DISABLE_FILE_VALIDATION := 1
# Deterministic cuBLAS on GPUs (full profile).
export CUBLAS_WORKSPACE_CONFIG := :4096:8
ifneq ($(PROFILE),full)
# The offline profiles must never reach the network: clipnb refuses non-loopback connections.
export CLIPNB_OFFLINE := 1
export HF_HUB_OFFLINE := 1
endif
ifneq ($(DATA),)
export CLIPNB_DATA := $(abspath $(DATA))
endif
export CLIPNB_EXECUTOR := $(EXECUTOR)
ifneq ($(RAY_ADDRESS),)
export CLIPNB_RAY_ADDRESS := $(RAY_ADDRESS)
endif

.PHONY: help env book run test bench lint lab clean clean-cache

help:
	@echo "make book [PROFILE=embedded|smoke|full] [DATA=/path]   run every study, build book/_build/html"
	@echo "          [EXECUTOR=local|ray] [RAY_ADDRESS=host:port]  sweeps on a local or a cluster Ray"
	@echo "make test                                             the test suite (what CI runs)"
	@echo "make lab                                              JupyterLab on notebooks/ with the project's kernel"
	@echo "make run STUDY=name [PROFILE=...]                     run one study"
	@echo "make bench                                            pretraining throughput, FLOPs and peak fraction"
	@echo "make lint | clean | clean-cache"

env: $(VENV)/.installed

$(VENV)/.installed: requirements.lock.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name clipnb --display-name "Python (clipnb)" >/dev/null
	touch $@

book: env
	$(BIN)/python -m clipnb run --profile $(PROFILE)
	$(BIN)/jupyter-book build book -W -n --keep-going
	@echo "Report: $(CURDIR)/book/_build/html/index.html"

run: env
	$(BIN)/python -m clipnb run $(STUDY) --profile $(PROFILE)

test: env
	$(BIN)/python -m pytest

bench: env
	$(BIN)/python -m clipnb bench pretrain --profile $(if $(filter smoke,$(PROFILE)),smoke,embedded)

lint: env
	$(BIN)/ruff check clipnb notebooks tests
	$(BIN)/ruff format --check clipnb notebooks tests

lab: env
	$(BIN)/jupyter lab --notebook-dir=notebooks

clean:
	rm -rf book/_build book/executed

clean-cache: clean
	rm -rf .cache
