# affectflow front door. `make demo` and `make test` are the two commands a new user needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export AFFECTFLOW_HOME ?= $(CURDIR)/.affectflow
export PREFECT_HOME ?= $(AFFECTFLOW_HOME)/prefect
PORT ?= 4200
export PREFECT_API_URL ?= http://127.0.0.1:$(PORT)/api
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
export PREFECT_UI_URL ?= http://127.0.0.1:$(PORT)
export HF_HUB_OFFLINE ?= 1
PYTEST_ARGS ?=

.PHONY: install demo test lint ui serve stop worker bench clean

install: $(VENV)/.installed

$(VENV)/.installed: requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), f"Python 3.11 needed, found {sys.version.split()[0]}"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	@mkdir -p "$(PREFECT_HOME)"  # Prefect warns on import when its home is missing
	$(BIN)/python -c "import cv2, mediapipe, feat, prefect, duckdb, great_expectations, torch; print('cv2', cv2.__version__, '| torch', torch.__version__)"
	@touch $@

serve: install
	@mkdir -p "$(PREFECT_HOME)"
	scripts/services.sh start

demo: serve
	$(BIN)/affectflow demo

ui: serve
	@echo "Prefect UI: $(PREFECT_UI_URL)"

stop:
	scripts/services.sh stop

worker: install   # deployments on the `affectflow` process work pool, and one worker (see docs/scaling.md)
	@mkdir -p "$(PREFECT_HOME)"
	scripts/services.sh server
	$(BIN)/prefect work-pool create affectflow --type process --overwrite
	AFFECTFLOW_REPO=$(CURDIR) $(BIN)/prefect --no-prompt deploy --all
	AFFECTFLOW_REPO=$(CURDIR) $(BIN)/prefect worker start --pool affectflow

test: install
	@mkdir -p "$(PREFECT_HOME)"
	env -u PREFECT_API_URL -u PREFECT_UI_URL $(BIN)/pytest -q $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check flows tasks models warehouse data_contracts affectflow tests benchmarks
	$(BIN)/mypy flows tasks models warehouse data_contracts

bench: install
	@for b in benchmarks/[!_]*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean: stop
	rm -rf $(AFFECTFLOW_HOME)
