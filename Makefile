# The two commands of the README, and the pieces they are made of.
#   make study   set up .venv (if missing) and run notebooks 01..07 on the quick profile (bundled sample, CPU)
#   make test    set up .venv (if missing) and run the tests, nbval over the notebooks included
PYTHON ?= python3.11
VENV ?= .venv
PROFILE ?= quick
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: study test setup lab clean-cache refresh-notebooks

setup: $(STAMP)

# torch/torchvision are pinned in pyproject.toml; pip resolves them like every other dependency
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

study: $(STAMP)
	$(BIN)/mri-synth notebooks --profile $(PROFILE)

# Figures, results and caches of a test run go to a temporary folder: testing never rewrites figures/ or results/,
# and every run starts as cold as CI (no generator or classifier trained by older code is reused).
test: $(STAMP)
	@tmp=$$(mktemp -d) && MRI_SYNTH_FIGURES=$$tmp/figures MRI_SYNTH_RESULTS=$$tmp/results MRI_SYNTH_CACHE=$$tmp/cache \
		$(BIN)/python -m pytest tests notebooks --nbval --nbval-current-env $(PYTEST_ARGS); \
		status=$$?; rm -rf $$tmp; exit $$status

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/

clean-cache:
	rm -rf .cache runs

# Re-execute the committed notebooks in place with their default (quick) parameters, so their stored outputs
# (which nbval compares) and figures/ are current. Run after changing a notebook or what it calls.
refresh-notebooks: $(STAMP)
	@for nb in $(NB); do echo "$$nb"; $(BIN)/papermill --cwd notebooks "$$nb" "$$nb" --no-progress-bar 2>&1 | grep -v 'TCP without encryption' || exit 1; done
NB ?= $(wildcard notebooks/[0-9][0-9]_*.ipynb)
