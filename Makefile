# bisenet_pl: the README's quick start is `make demo` then `make test`.
# `make install` makes .venv and reuses it afterwards (it reinstalls only when pyproject.toml changes).
#
# Torch: on a machine without a CUDA GPU the CPU build goes in first (pip takes the local
# torch-2.13.0+cpu wheel where one exists), so the resolver never pulls a multi-GB CUDA build.
# With a GPU, a torch already importable in .venv is kept; otherwise TORCH_GPU_SPEC is installed.
# Override either, e.g.  make install TORCH_CPU_SPEC='torch==2.14.1'  or  TORCH_INDEX='--index-url ...'.
#
# The lock (docs/installing.md): every other package is installed at the exact version the test suite
# passed with, requirements/lock-py<X.Y>.txt for this Python, used as pip constraints. `make lock`
# refreshes it (newest releases, then the whole suite, then the file). `make install LOCK=` installs
# from pyproject.toml's ranges instead.

PYTHON         ?= python3
VENV           ?= .venv
PY             := $(VENV)/bin/python
PIP            := $(PY) -m pip
TORCH_CPU_SPEC ?= torch==2.13.0
TORCH_GPU_SPEC ?= torch
TORCH_INDEX    ?=
EXTRAS         ?= dev,export,deploy,serve,cityscapes,sweep,fastpng
PIP_QUIET      ?= -q --disable-pip-version-check
STAMP          := $(VENV)/.installed
PY_VERSION     := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
LOCK           ?= $(wildcard requirements/lock-py$(PY_VERSION).txt)
LOCK_FLAGS     := $(if $(LOCK),-c $(LOCK),)

export NO_ALBUMENTATIONS_UPDATE := 1
export WANDB_SILENT             := true
export NO_MKDOCS_2_WARNING      := 1
# No W&B account in the demo/tests: keep runs on disk (`wandb sync` uploads them later).
export WANDB_MODE               ?= offline

.PHONY: _pywuffs browser install lock parity-report docs demo test test-fast test-slurm bench lint format clean help parity-env test-parity gpu-wheels gpu-check-smoke

help:
	@echo "make demo        install, make the synthetic dataset, train + evaluate the demo model (CPU, minutes)"
	@echo "make test        install, lint, then run the test suite"
	@echo "make lock        refresh the locks of tested versions: newest releases, the whole suite, then the files"
	@echo "make browser     Chromium for the served page's browser test (Debian's package, when missing)"
	@echo "make test-parity the parity suite: mmsegmentation run beside us (makes the reference venv once)"
	@echo "make parity-report  the parity suite, then its figures into experiments/parity.json and docs/"
	@echo "make parity-env  the reference venv for the parity suite ($(PARITY_VENV), reused)"
	@echo "make test-fast   the tests without the Slurm cluster and the slow end-to-end runs"
	@echo "make test-slurm  run the tests that need a local Slurm cluster (started and stopped by the test)"
	@echo "make bench       speed benchmarks and the deployment table (results in experiments/)"
	@echo "make docs        the documentation site into site/ (mkdocs build --strict)"
	@echo "make lint        ruff check, ruff format --check, mypy bisenet_pl (types)"
	@echo "make format      ruff: fix what it can, reformat"
	@echo "make gpu-wheels  the GPU check's missing dependencies for an offline CPython 3.12 GPU box (.gpu-wheels/)"
	@echo "make gpu-check-smoke  scripts/gpu_check.sh --cpu-smoke: the GPU check at toy size on this CPU"

install: $(STAMP)

$(STAMP): pyproject.toml $(LOCK)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@if [ -n "$(LOCK)" ]; then echo "[install] tested versions from $(LOCK)"; \
	else echo "[install] no lock for Python $(PY_VERSION) (requirements/): pyproject.toml's ranges, untested"; fi
	@if $(PY) -c "import torch" 2>/dev/null; then \
		echo "[install] keeping torch $$($(PY) -c 'import torch; print(torch.__version__)')"; \
	elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		echo "[install] CUDA GPU found: installing $(TORCH_GPU_SPEC)"; \
		$(PIP) install $(PIP_QUIET) $(TORCH_INDEX) $(LOCK_FLAGS) "$(TORCH_GPU_SPEC)" numpy; \
	else \
		echo "[install] no CUDA GPU: installing the CPU build $(TORCH_CPU_SPEC)"; \
		$(PIP) install $(PIP_QUIET) $(TORCH_INDEX) $(LOCK_FLAGS) "$(TORCH_CPU_SPEC)" numpy 2>&1 | grep -v "is ignored: it is neither" || true; \
	fi
	@$(PY) -c "import torch" || { echo "[install] torch failed to install"; exit 1; }
	$(if $(findstring fastpng,$(EXTRAS)),@$(MAKE) --no-print-directory _pywuffs)
	@echo "[install] bisenet_pl[$(EXTRAS)] (editable)"
	@$(PIP) install $(PIP_QUIET) $(LOCK_FLAGS) -e ".[$(EXTRAS)]" 2>&1 | grep -v "is ignored: it is neither" ; \
		$(PY) -c "import bisenet_pl, lightning, hydra, albumentations" || { echo "[install] package install failed"; exit 1; }
	@$(PY) -c "import torch; print('[install] torch', torch.__version__, '| cuda available:', torch.cuda.is_available())"
	@touch $(STAMP)

# pywuffs (the `fastpng` extra, Wuffs' PNG decoder) has no wheel on PyPI: it is compiled here, about a
# minute, with the locked setuptools/wheel/pybind11 (--no-build-isolation), so an upstream release of a
# build tool cannot break it. Without a C++ compiler: `make install EXTRAS=dev,export,deploy,serve,cityscapes,sweep`
# (PNGs are then decoded by libspng: same pixels, slower; docs/installing.md).
_pywuffs:
	@if ! $(PY) -c "import pywuffs" 2>/dev/null; then \
		echo "[install] pywuffs: Wuffs' PNG decoder, compiled from source (about a minute)"; \
		$(PIP) install $(PIP_QUIET) $(LOCK_FLAGS) setuptools wheel pybind11 2>&1 | grep -v "is ignored: it is neither"; \
		$(PIP) install $(PIP_QUIET) $(LOCK_FLAGS) --no-build-isolation "pywuffs>=2.0.1,<3" 2>&1 | grep -v "is ignored: it is neither"; \
		$(PY) -c "import pywuffs" || { echo "[install] pywuffs did not build: it needs a C++ compiler and the Python headers (or leave fastpng out of EXTRAS: docs/installing.md)"; exit 1; }; \
	fi

demo: install
	$(PY) -m bisenet_pl.demo

# Two pytest-xdist workers (CI has 2 cores; most tests wait on subprocesses): TEST_WORKERS=0 runs serially.
TEST_WORKERS ?= 2
test: install parity-env browser lint docs
	BISENET_LOCK=$(abspath $(LOCK)) $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup tests

# The parity suite's reference (tests/parity): mmsegmentation in its own throw-away venv, never in
# .venv, made once and reused (reinstalled only when its requirement list changes). CPU torch first,
# so pip never pulls a CUDA build; override PARITY_TORCH_INDEX where no local CPU wheel exists, e.g.
#   make parity-env PARITY_TORCH_INDEX='--index-url https://download.pytorch.org/whl/cpu'
PARITY_VENV        ?= .parity-venv
PARITY_REQS        := tests/parity/requirements.txt
PARITY_STAMP       := $(PARITY_VENV)/.installed
PARITY_TORCH_SPEC  ?= $(TORCH_CPU_SPEC)
PARITY_TORCH_INDEX ?=
PARITY_LOCK        ?= $(wildcard tests/parity/lock-py$(PY_VERSION).txt)
PARITY_LOCK_FLAGS  := $(if $(PARITY_LOCK),-c $(PARITY_LOCK),)
export BISENET_PARITY_VENV := $(abspath $(PARITY_VENV))

parity-env: $(PARITY_STAMP)

$(PARITY_STAMP): $(PARITY_REQS) $(PARITY_LOCK)
	@test -x $(PARITY_VENV)/bin/python || $(PYTHON) -m venv $(PARITY_VENV)
	@echo "[parity-env] $(PARITY_TORCH_SPEC) (CPU), then $(PARITY_REQS), into $(PARITY_VENV)"
	@$(PARITY_VENV)/bin/python -m pip install $(PIP_QUIET) $(PARITY_TORCH_INDEX) $(PARITY_LOCK_FLAGS) "$(PARITY_TORCH_SPEC)" numpy 2>&1 \
		| grep -v "is ignored: it is neither" || true
	@$(PARITY_VENV)/bin/python -m pip install $(PIP_QUIET) $(PARITY_LOCK_FLAGS) -r $(PARITY_REQS) 2>&1 \
		| grep -v "is ignored: it is neither" || true
	@$(PARITY_VENV)/bin/python tests/parity/reference/_bootstrap.py 2>/dev/null \
		|| { echo "[parity-env] mmsegmentation does not import in $(PARITY_VENV)"; exit 1; }
	@touch $(PARITY_STAMP)

# `make lock`: the newest releases pyproject.toml allows, in fresh venvs (.lock-venv, .lock-parity-venv),
# then the whole suite against them; only when it passes do the new locks replace requirements/ and
# tests/parity/. Review `git diff requirements tests/parity` and commit: an upgrade is a tested step.
LOCK_FILE        := requirements/lock-py$(PY_VERSION).txt
PARITY_LOCK_FILE := tests/parity/lock-py$(PY_VERSION).txt
lock:
	rm -rf .lock-venv .lock-parity-venv
	$(MAKE) install parity-env VENV=.lock-venv PARITY_VENV=.lock-parity-venv LOCK= PARITY_LOCK=
	.lock-venv/bin/python scripts/write_lock.py > $(LOCK_FILE).new
	.lock-parity-venv/bin/python scripts/write_lock.py > $(PARITY_LOCK_FILE).new
	$(MAKE) test VENV=.lock-venv PARITY_VENV=.lock-parity-venv LOCK=$(LOCK_FILE).new PARITY_LOCK=$(PARITY_LOCK_FILE).new
	mv $(LOCK_FILE).new $(LOCK_FILE)
	mv $(PARITY_LOCK_FILE).new $(PARITY_LOCK_FILE)
	@echo "[lock] $(LOCK_FILE) and $(PARITY_LOCK_FILE) refreshed; the suite passed with them. Review and commit."

test-parity: install parity-env
	$(PY) -m pytest -q tests/parity

# Regenerating tracked documents is its own, explicit step: the suite, then its figures published to
# experiments/parity.json and the tables in docs/parity.md and docs/reproduction.md.
parity-report: test-parity
	$(PY) tests/parity/report.py

test-fast: install
	$(PY) -m pytest -q -m "not slurm and not slow" tests

test-slurm: install
	$(PY) -m pytest -q -m slurm tests

bench: install parity-env
	$(PY) benchmarks/run_all.py
	$(PY) benchmarks/deploy.py

lint: install
	$(VENV)/bin/ruff check bisenet_pl tests benchmarks scripts
	$(VENV)/bin/ruff format --check bisenet_pl tests benchmarks scripts
	$(VENV)/bin/mypy bisenet_pl

# The documentation site (mkdocs.yml): --strict turns a broken link, a missing page or an API page that no
# longer resolves into a failure. Built into site/ (ignored).
docs: install
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

format: install
	$(VENV)/bin/ruff check --fix bisenet_pl tests benchmarks scripts
	$(VENV)/bin/ruff format bisenet_pl tests benchmarks scripts

# docs/gpu_check.md: what a borrowed GPU machine (CPython 3.12, torch with CUDA, no network) lacks.
GPU_WHEELS := .gpu-wheels
# The borrowed GPU box runs CPython 3.12; GPU_PY=3.11 rehearses the offline install with this machine's Python.
GPU_PY ?= 3.12
gpu-wheels: install
	rm -rf $(GPU_WHEELS) && mkdir -p $(GPU_WHEELS)
	$(PIP) download --quiet --no-deps --only-binary=:all: --python-version $(GPU_PY) --implementation cp \
		--abi cp$(subst .,,$(GPU_PY)) --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
		--platform manylinux_2_28_x86_64 -d $(GPU_WHEELS) -r scripts/gpu_wheels.txt
	$(PIP) wheel --quiet --no-deps -w $(GPU_WHEELS) antlr4-python3-runtime==4.9.3
	@du -sh $(GPU_WHEELS)

gpu-check-smoke: install
	PYTHON=$(PY) bash scripts/gpu_check.sh --cpu-smoke outputs/gpu_check_smoke

clean:
	rm -rf outputs multirun site .pytest_cache .ruff_cache .lock-venv .lock-parity-venv

# The served web page is tested in a real headless browser (tests/serving). Debian's chromium, installed
# once when it is missing and apt-get can run; elsewhere install any Chromium and set BISENET_CHROMIUM.
browser:
	@if [ -n "$$BISENET_CHROMIUM" ] || command -v chromium >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "[browser] installing Debian's chromium for the web page test"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 \
		|| { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1; } \
		|| echo "[browser] could not install chromium: the web page test will fail and say so"; \
	else echo "[browser] no chromium: install one (or set BISENET_CHROMIUM) for the web page test"; fi
