# Fresh machine: `make demo` or `make test` does all the set-up (venv, torch, package).
# A second run reuses .venv and only reinstalls when pyproject.toml changed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of PyTorch 2.13.0. A GPU user installs the CUDA wheel instead (see README).
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: demo test lint setup clean experiments experiments-standard clone-test

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[dev]"
	# litdata (the `stream` extra) without its torchvision requirement; its imports come with dev
	$(BIN)/pip install --quiet --no-deps "litdata==0.2.76"
	touch $(STAMP)

# The main job: the Canziani-style comparison of the default models on this machine
# (about 4 minutes on 2 CPU cores); tables, plots and report.html land in out/compare.
demo: $(STAMP)
	$(BIN)/cnnzoo compare --out out/compare

# Every experiment's quick preset (about 30 minutes on 2 CPU cores), then docs/experiments.md.
EXPERIMENTS := degradation gradient-flow lesion paths inception dense-vs-residual \
	squeeze-excitation compound-scaling deformable efficiency effective-receptive-field
experiments: $(STAMP)
	set -e; for e in $(EXPERIMENTS); do \
		$(BIN)/cnnzoo experiment $$e --preset quick --out docs/experiments/$$e; done
	$(BIN)/python scripts/experiments_doc.py

# Every experiment's standard preset (issue 15: at most 30 minutes each on 2 CPU cores, scaled
# to decide each claim): standard-2se where the experiment has it (the rules "cleared by 2
# standard errors" that replaced point estimates, under a new name), else standard; into
# docs/experiments/NAME/PRESET, then docs/experiments.md. One at a time under a lock: two runs
# sharing the cores would each take twice as long.
experiments-standard: $(STAMP)
	set -e; for e in $(EXPERIMENTS); do \
		p=$$($(BIN)/cnnzoo experiment $$e --standard-preset); \
		flock /tmp/cnnzoo-experiments.lock $(BIN)/cnnzoo experiment $$e --preset $$p \
			--out docs/experiments/$$e/$$p; done
	$(BIN)/python scripts/experiments_doc.py

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/python -m pytest -q

# The whole suite in a fresh clone of HEAD with nothing beside it (no shared data folder), as a user's
# clone from the public repository would run it; reuses this checkout's venv.
clone-test: $(STAMP)
	set -e; d=$$(mktemp -d); trap 'rm -rf "$$d"' EXIT; \
	git clone --quiet --no-hardlinks . "$$d/cnnzoo"; \
	cd "$$d/cnnzoo" && PYTHONPATH="$$d/cnnzoo/src" $(CURDIR)/$(BIN)/python -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks scripts

clean:
	rm -rf $(VENV) build dist src/*.egg-info
