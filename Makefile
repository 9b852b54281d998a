# nutrino_ml: `make demo` runs the whole stack end to end; `make test` runs every check.
# Both create .venv (Python 3.12, the Lambda runtime's version) when it is missing.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# Nothing phones home, in every process started from here.
export PLOOMBER_STATS_ENABLED := false
export PLOOMBER_VERSION_CHECK_DISABLED := 1
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true
export SPARK_LOCAL_IP := 127.0.0.1
export PYTHONWARNINGS := ignore::FutureWarning,ignore::DeprecationWarning

VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# the serving runtime's wheels for Lambda (manylinux, cp312), so `chalice package` needs no index at test time
WHEELHOUSE := .wheelhouse
DEMO_USERS ?= 12
DEMO_DAYS ?= 10

.PHONY: help venv demo test fuzz bench lint-nbs nbs-test pytest lab clean
help:
	@echo "make demo   simulate a lake, train + register both models, a forecaster canary at 10%, export, replay traffic, collect, evaluate, smoke"
	@echo "make test   check nbs/ and nutrino_ml/ agree, run the notebooks' examples and pytest"
	@echo "make fuzz   20,000 random requests of every route over HTTP to chalice local: no 5xx"
	@echo "make bench  serving benchmarks vs MLflow (bench/README.md); bench-features, bench-stream, bench-cli: see bench/README.md"

$(STAMP): pyproject.toml chalice_app/requirements.txt Makefile
	@test -x $(BIN)/python || "$$(.ci/find-python312)" -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip==26.2.1
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	@# Ploomber's Jupyter server extension swaps the contents manager and makes JupyterLab's contents API answer 500
	$(BIN)/jupyter server extension disable --sys-prefix ploomber >/dev/null 2>&1
	$(BIN)/python -m pip download -q --disable-pip-version-check -d $(WHEELHOUSE) \
	    --only-binary=:all: --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
	    --python-version 3.12 --implementation cp -r chalice_app/requirements.txt
	touch $@

venv: $(STAMP)

# the version the last `ploomber build` registered (or found already registered) for model $(1)
REGISTERED = $$($(BIN)/python -c 'import json, sys; print(json.load(open(sys.argv[1]))["version"])' pipelines/products/registered/$(1).json)

demo: $(STAMP)
	$(BIN)/nutrino-ml datalake simulate --users $(DEMO_USERS) --days $(DEMO_DAYS) --seed 7
	cd pipelines && ../$(BIN)/ploomber build
	$(BIN)/nutrino-ml models promote glucose-response $(call REGISTERED,glucose-response)
	$(BIN)/nutrino-ml models promote glucose-forecast $(call REGISTERED,glucose-forecast)
	@# a second forecaster (another shrinkage, so another training identity: a new version) as a 90/10 sticky canary
	cd pipelines && ../$(BIN)/ploomber build --env--forecast_shrinkage 5
	$(BIN)/nutrino-ml models promote glucose-forecast $(call REGISTERED,glucose-forecast) --alias canary
	$(BIN)/nutrino-ml models route glucose-forecast --weights production=90,canary=10 --sticky-key user_id
	$(BIN)/nutrino-ml models list
	$(BIN)/nutrino-ml export
	@# the lake's last 6 hours replayed step by step, online predictions between steps: logged to data/logs/app.log
	$(BIN)/nutrino-ml traffic --hours 6 --requests 300
	$(BIN)/nutrino-ml inference-log collect
	$(BIN)/nutrino-ml features materialize
	$(BIN)/nutrino-ml stream replay --last 400
	$(BIN)/nutrino-ml features check-skew --sample 5
	$(BIN)/nutrino-ml inference-log evaluate
	$(BIN)/nutrino-ml models verdict glucose-forecast
	$(BIN)/nutrino-ml smoke --online u003

# nbs/ is the source of truth: fail when nbdev-clean or nbdev-export would change nbs/ or nutrino_ml/.
lint-nbs: $(STAMP)
	.ci/check-nbs $(BIN)

nbs-test: $(STAMP)
	$(BIN)/nbdev-test --n-workers 2

pytest: $(STAMP)
	$(BIN)/python -m pytest

test: lint-nbs nbs-test pytest

# the long fuzz run: 20,000 random requests of every route and protocol over HTTP to chalice local, 0 x 5xx (make test sends 2,500)
fuzz: $(STAMP)
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-20000} CHUNK_EXAMPLES=$${CHUNK_EXAMPLES:-2000} $(BIN)/python -m pytest -p no:cacheprovider -n 0 -s -q tests/test_fuzz.py tests/test_online_chunks.py

# benchmarks against the tools a user would otherwise use; each writes its table into bench/README.md
bench: $(STAMP)
	$(BIN)/python bench/serving/run.py

# each registry command's wall, CPU and import time in fresh processes on a copy of the demo registry (after make demo)
.PHONY: bench-cli
bench-cli: $(STAMP)
	$(BIN)/python bench/cli/run.py $(BENCH_CLI_ARGS)

# feature extraction pandas vs Spark local[2] (10^5, 10^6 events; BENCH_FEATURES_ARGS=--big adds 10^7), Spark batch scoring vs mlflow spark_udf
# the Kinesis feature handler per batch (100, 1,000, 10,000 records) on SQLite and on a moto DynamoDB server: records/s,
# CPU ms and store round trips per batch, before (a worktree of the commit before) and after; about 45 min
.PHONY: bench-stream
bench-stream: $(STAMP)
	$(BIN)/python bench/stream/run.py $(BENCH_STREAM_ARGS)

.PHONY: bench-features
bench-features: $(STAMP)
	$(BIN)/python bench/features/run.py $(BENCH_FEATURES_ARGS)

# JupyterLab on the project, loopback only, with a token (printed in the URL)
lab: $(STAMP)
	$(BIN)/jupyter lab --no-browser --ip 127.0.0.1 $(if $(filter 0,$(shell id -u)),--allow-root)

clean:
	rm -rf data pipelines/products chalice_app/chalicelib/models chalice_app/vendor .test
