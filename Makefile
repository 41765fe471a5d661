# The front door. `make run`: set up (if needed) and run the whole pipeline on the embedded
# default data. `make test`: set up (if needed) and run the test suite. Both work offline.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
PIP := $(BIN)/pip --disable-pip-version-check --quiet
STAMP := $(VENV)/.installed

# Quiet and offline, whoever calls make (the flows set the same defaults for direct calls).
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export MLFLOW_DISABLE_TELEMETRY := true
export DVC_NO_ANALYTICS := 1
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM := false
export PATH := $(CURDIR)/$(BIN):$(PATH)

SCALE_COVERS ?= 20000
SCALE_LISTING_ROWS ?= 200000
SEARCH_SIZES ?= 100000,1000000,10000000
HYBRID_SIZES ?= 100000,1000000

.PHONY: setup init run repro test test-fast summary plots plots-template experiments lock clean clean-outputs bench-classifier bench-labeling bench-classify bench-search bench-clip bench-scale bench-reading bench-identify bench-hybrid search-page browser ui ui-stop

$(STAMP): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), f"Python 3.11 is required, found {sys.version.split()[0]}; set PYTHON=python3.11"'
	$(PYTHON) -m venv $(VENV)
	$(PIP) install torch==2.13.0
	$(PIP) install -r requirements.lock
	$(PIP) install --no-deps -e .
	touch $(STAMP)

setup: $(STAMP) ## create .venv and install everything (torch==2.13.0 first)

init: setup ## DVC's local default remote folder; MLflow creates mlflow.db on first use
	@test -d .dvc || $(BIN)/dvc init --quiet
	@mkdir -p dvc-remote

run: init ## the whole pipeline as one Prefect flow, then a summary
	$(BIN)/bookcovers run

repro: init ## the same stages through DVC (reruns only what changed)
	$(BIN)/dvc repro

summary: setup
	$(BIN)/bookcovers summary

experiments: init ## the caption, sampler and learning-curve DVC experiments on the data of the last run (after make run; ~4 min a variant)
	$(BIN)/bookcovers experiments

plots: init ## every plot of the last run in one HTML report (dvc_plots/index.html) that renders offline (after make run)
	$(BIN)/dvc plots show --out dvc_plots

plots-template: setup ## rebuild config/plots_offline.html (Vega scripts inlined) from the npm registry, sha512-checked
	$(PY) -m tasks.platform.plots_offline

test: init ## the whole suite (no GPU, no internet); the browser tests run once `make browser` has installed Chromium
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || echo "note: Chromium is not installed, so the browser tests (search page, plots report) are skipped; \`make browser\` installs it (apt, as root or with sudo)"
	$(PY) -m pytest

test-fast: init ## everything but the end-to-end runs
	$(PY) -m pytest -m "not slow"

bench-classifier: setup ## train + select at the full book32 size (207,572 rows) and labeling titles/s; needs ../shared/data
	$(PY) -m benchmarks.classifier

ui: init ## Prefect server (:4200) + the deployments' process + MLflow server (:5000) on 127.0.0.1; PIDs and logs in .ui/
	$(BIN)/bookcovers ui start

ui-stop: ## stop exactly the processes `make ui` started
	@test -x $(PY) && $(BIN)/bookcovers ui stop || true

bench-labeling: setup ## champion classifier titles/s on 100,000 real titles, first call and steady (after make run)
	$(PY) -m benchmarks.labeling

bench-classify: setup ## bookcovers classify rows/s and peak memory on generated 500k- and 1M-row listings (after make run)
	$(PY) -m benchmarks.classify

bench-search: setup ## cover search latency at 100,000 covers, then exact vs FAISS index at SEARCH_SIZES covers (after make run; 10 GB of disk at 10 M)
	$(PY) -m benchmarks.search
	$(PY) -m benchmarks.search_scale --sizes $(SEARCH_SIZES)

bench-scale: setup ## the data stages (listing and cover validation, shards, embedding) in one process and on 1 and 2 Dask workers: items/s, per-item cost, peak RSS per worker
	$(PY) -m benchmarks.scale --covers $(SCALE_COVERS) --listing-rows $(SCALE_LISTING_ROWS) --listing-whole

bench-clip: setup ## CLIP fine-tuning pairs/s, speed-up over the naive recipe, MFU, peak memory (ViT-B/32 on a GPU; small CLIP on CPU); needs ../shared/data
	$(PY) -m benchmarks.clip

bench-reading: setup ## the cover reader per setting on 400 real covers: seconds a cover, covers/s, title<->cover recall of the read text (needs ../shared/data)
	$(PY) -m benchmarks.reading

bench-identify: setup ## coverage and precision of "this looks like <title>" per threshold pair, on the validation covers against the whole index (after make run)
	$(PY) -m benchmarks.identify

bench-hybrid: setup ## a hybrid (CLIP + read text) title query's p50/p95 at HYBRID_SIZES covers of generated read text
	$(PY) -m benchmarks.hybrid --sizes $(HYBRID_SIZES)

search-page: setup ## the cover search page on http://127.0.0.1:8000 (after make run)
	$(BIN)/bookcovers serve

browser: ## Debian's headless Chromium + driver for the browser tests; installs ~115 packages as root (or sudo), so only on request
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { $$( [ "$$(id -u)" = 0 ] || echo sudo -n ) apt-get install -y -q chromium chromium-driver; }

lock: setup ## refresh requirements.lock from the current environment
	{ head -2 requirements.lock; $(BIN)/pip freeze --exclude-editable | grep -v '^torch=='; } > requirements.lock.new && mv requirements.lock.new requirements.lock

clean-outputs: ## remove pipeline outputs and tracking state (keeps .venv)
	rm -rf data/raw/generated data/interim data/processed models metrics plots mlflow.db mlruns mlartifacts dvc.lock

clean: clean-outputs
	rm -rf $(VENV)
