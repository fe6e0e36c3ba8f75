# The two commands of the README, and the pieces they are made of.
#   make study   set up .venv (if missing) and run notebooks 01..07 on the quick profile (bundled sample, CPU)
#   make test    set up .venv (if missing) and run the tests, nbval over the notebooks included
# The first Python >= 3.11 on the PATH, newest first (one that does not run, e.g. a pyenv shim of a version that is
# not selected, counts as absent); `make PYTHON=/path/to/python` chooses another.
PYTHON_CANDIDATES := python3.13 python3.12 python3.11 python3
PYTHON ?= $(firstword $(foreach p,$(PYTHON_CANDIDATES),$(shell $(p) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
	>/dev/null 2>&1 && echo $(p))))
VENV ?= .venv
PROFILE ?= quick
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: study test lint setup lab clean-cache refresh-notebooks

setup: $(STAMP)

# pyproject.toml holds the bounds the code works with; constraints.txt the exact versions the study was measured with
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || { test -n "$(PYTHON)" || { echo "make: no Python >= 3.11 found (tried" \
		"$(PYTHON_CANDIDATES)): install one, or run make PYTHON=/path/to/python3.11-or-newer" >&2; exit 1; }; \
		echo "$(PYTHON) -m venv $(VENV)"; $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test,ray]'
	@touch $(STAMP)

study: $(STAMP)
	$(BIN)/mri-synth notebooks --profile $(PROFILE)

# Figures, results and caches of a test run go to a temporary folder: testing never rewrites figures/ or results/,
# and every run starts as cold as CI (no generator or classifier trained by older code is reused). nbval also checks
# the real-data study's recorded notebooks that only read recorded trials (real/ and rerun/, 04-07; RECORDED): every
# table they show is re-computed from the committed trials and compared, with only volatile parts masked
# (tests/nbval_sanitize.cfg).
test: $(STAMP)
	@test -n "$(MRI_SYNTH_DATA)" || echo "make test: MRI_SYNTH_DATA is not set, so the recorded real-data notebooks" \
		"(benchmarks/results/real/04, 07) are not re-checked; set it to the dataset folder to include them"
	@tmp=$$(mktemp -d) && MRI_SYNTH_FIGURES=$$tmp/figures MRI_SYNTH_RESULTS=$$tmp/results MRI_SYNTH_CACHE=$$tmp/cache \
		$(BIN)/python -m pytest tests notebooks $(RECORDED) --nbval --nbval-current-env \
		--nbval-sanitize-with tests/nbval_sanitize.cfg $(PYTEST_ARGS); \
		status=$$?; rm -rf $$tmp; exit $$status

# pyflakes, pycodestyle and import order over the whole tree (pyproject.toml's [tool.ruff]); CI runs it before the tests
lint: $(STAMP)
	$(BIN)/ruff check .

# JupyterLab (the `lab` extra) at the project root, opened on index.ipynb (which notebook and figure file makes each of
# the thesis's tables and figures): notebooks/, the recorded real-data notebooks and figures/ in reach.
# Kernels keep freed memory in their heaps, as the notebook batch's do (mri_synth/training/heap.py: faster CPU training).
lab: $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[lab]'
	GLIBC_TUNABLES="$$($(BIN)/python -c 'import os; from mri_synth.training import heap; print(heap.tunables(existing=os.environ.get("GLIBC_TUNABLES", "")))')" \
		$(BIN)/jupyter lab --notebook-dir=. $(if $(filter 0,$(shell id -u)),--allow-root) index.ipynb

clean-cache:
	rm -rf .cache runs

# Re-execute the committed notebooks in place with their default (quick) parameters, so their stored outputs
# (which nbval compares) and figures/ are current. Run after changing a notebook or what it calls.
refresh-notebooks: $(STAMP)
	@for nb in $(NB); do echo "$$nb"; $(BIN)/papermill --cwd notebooks "$$nb" "$$nb" --no-progress-bar 2>&1 | grep -v 'TCP without encryption' || exit 1; done
# the recorded real-data notebooks read the real dataset (class counts, the evaluations' people): checked where
# MRI_SYNTH_DATA names it (CI, a development machine), left out with a note on a machine without it
RECORDED := $(if $(MRI_SYNTH_DATA),$(wildcard benchmarks/results/real/0[4-7]_*.ipynb benchmarks/results/rerun/0[4-7]_*.ipynb))
NB ?= $(wildcard notebooks/[0-9][0-9]_*.ipynb)
