# The README's commands. `make test` is what CI runs.
PY ?= .venv/bin/python
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_DISABLE_PROGRESS_BARS ?= 1

.PHONY: setup test course bench

setup:  ## a virtual environment with the pinned packages and reftx_lib installed in editable mode
	test -d .venv || python3 -m venv .venv
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .

test:  ## style gate (ruff), unit tests, then every notebook (solutions/ too) executed at the smoke budget under nbval
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -q tests
	REFTX_BUDGET=smoke $(PY) -m pytest -q --nbval-lax --nbval-current-env notebooks

course:  ## the whole course at BUDGET (default cpu), notebooks executed into runs/<budget>/
	$(PY) -m course run --budget $(or $(BUDGET),cpu)

bench:  ## speed against the Hugging Face peers on this machine (all four seed sizes: ~16 min on 2 CPU cores)
	$(PY) -m tools --generation
