# maskpaint: `make demo` (set up + one real-photo job) and `make test` (set up + the tests).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
WEIGHTS ?= .weights
export PIP_DISABLE_PIP_VERSION_CHECK=1

.PHONY: setup dev-weights demo test bench schema clean

$(VENV)/.installed: requirements-dev.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.lock
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

setup: $(VENV)/.installed

dev-weights: setup
	$(PY) -m weights.tiny --out $(WEIGHTS)

demo: dev-weights
	MASKPAINT_WEIGHTS_DIR=$(WEIGHTS) $(PY) -m handlers.cli demo

test: setup
	$(PY) -m pytest -q

bench: dev-weights
	MASKPAINT_WEIGHTS_DIR=$(WEIGHTS) $(PY) -m bench

schema: setup
	$(PY) -m handlers.schema
	cd clients/ts && { test -d node_modules || npm ci; } && npm run gen

clean:
	rm -rf $(VENV) $(WEIGHTS) outputs .pytest_cache clients/ts/node_modules clients/ts/dist
