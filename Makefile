# The README's commands. `make test` is what CI runs.
PY ?= .venv/bin/python
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_DISABLE_PROGRESS_BARS ?= 1

.PHONY: setup test course bench

setup:  ## a virtual environment with the pinned packages and reftx_lib installed in editable mode
	test -d .venv || python3 -m venv .venv
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .

test:  ## style gate (ruff), unit tests, then every notebook executed at the smoke preset under nbval
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -q tests
	REFTX_PRESET=smoke $(PY) -m pytest -q --nbval-lax --nbval-current-env notebooks

course:  ## the whole course at PRESET (default cpu), notebooks executed into runs/<preset>/
	$(PY) -m course run --preset $(or $(PRESET),cpu)

bench:  ## speed against the Hugging Face peers on this machine (all four seed sizes: ~16 min on 2 CPU cores)
	$(PY) -m tools --generation
