# `make train` and `make test` each set up everything they need first (idempotently, into .venv).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch and torchaudio are pinned to the tested pair (torch 2.14.1 ships with its CUDA libraries: it runs on CPU and GPU).
TORCH := torch==2.14.1 torchaudio==2.11.0
UI_PORT ?= 5000
PYTEST_WORKERS ?= 2

.PHONY: install train test lint format ui clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check $(TORCH)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev]" $(TORCH)
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install the project with its dev tools

train: install  ## train the default model (the report's 2D CNN) on the embedded corpus; ARGS="..." adds overrides
	$(BIN)/emotion-train $(ARGS)

test: install  ## lint, then run the test suite (on PYTEST_WORKERS processes, pytest-xdist)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The UI needs none of MLflow's background job runners (GenAI jobs), and one worker (MLflow starts 4): each
# would take CPU from the training runs it shows.
UI_WORKERS ?= 1
ui: install  ## browse the runs: http://127.0.0.1:$(UI_PORT)
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow ui --backend-store-uri sqlite:///mlruns.db --host 127.0.0.1 --port $(UI_PORT) --workers $(UI_WORKERS)

clean:
	rm -rf $(VENV) outputs multirun
