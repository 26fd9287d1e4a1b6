# maskpaint: `make demo` (set up + one real-photo job), `make serve` (the web API + mask editor
# page locally) and `make test` (set up + the tests).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# PROFILE=sd15-commercial (any manifest profile): dev weights of that profile only, in a
# directory of their own (e.g. `make demo PROFILE=sd15-commercial`: no non-commercial model).
PROFILE ?=
WEIGHTS ?= .weights$(if $(PROFILE),-$(PROFILE))
export PIP_DISABLE_PIP_VERSION_CHECK=1

.PHONY: setup dev-weights demo serve client-dist test bench load schema clean editor-deps gpu-wheels

$(VENV)/.installed: requirements-dev.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.lock
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

setup: $(VENV)/.installed

dev-weights: setup
	$(PY) -m weights.tiny --out $(WEIGHTS)$(if $(PROFILE), --profile $(PROFILE))

demo: dev-weights
	MASKPAINT_WEIGHTS_DIR=$(WEIGHTS) $(PY) -m handlers.cli demo

# The web API (as on Modal) with a local dispatcher and the dev weights, plus the mask editor's
# reference page; prints the URL to open. HOST / PORT override 127.0.0.1:8080 (8000 is RunPod's local test server).
HOST ?= 127.0.0.1
PORT ?= 8080
serve: dev-weights client-dist
	MASKPAINT_WEIGHTS_DIR=$${MASKPAINT_WEIGHTS_DIR:-$(WEIGHTS)} $(PY) -m handlers.serve --host $(HOST) --port $(PORT)

# @maskpaint/client built into clients/ts/dist (the page's import map points there).
client-dist:
	cd clients/ts && { test -d node_modules || npm ci --no-audit --no-fund --loglevel=error; } && npm run build --silent

test: setup editor-deps
	$(PY) -m pytest -q

# The mask editor's browser tests (tests/test_mask_editor.py) need Debian's `chromium`: installed
# here only when missing and only as root with apt-get (CI); elsewhere a hint, and the tests skip
# (they fail under CI=1). Its npm packages (playwright-core) are installed by the test itself
# (`npm ci`, once per package-lock). About 80 s (apt-get update + 130 packages) on this Debian 12 machine.
editor-deps:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else echo "mask editor: Chromium missing; install it (sudo apt-get install -y chromium)"; fi; }

bench: dev-weights
	MASKPAINT_WEIGHTS_DIR=$(WEIGHTS) $(PY) -m bench

# A burst on the local web API (the server `make serve` runs, with the dev weights): Locust
# headless for LOAD_S seconds with LOAD_USERS closed-loop users; fails on a lost job or one run
# twice. LOAD_TARGET=runpod drives the runpod SDK's local server instead. Table: bench/RESULTS.md.
LOAD_S ?= 60
LOAD_USERS ?= 8
LOAD_TARGET ?= web
load: dev-weights
	MASKPAINT_WEIGHTS_DIR=$${MASKPAINT_WEIGHTS_DIR:-$(WEIGHTS)} $(PY) -m bench.load --target $(LOAD_TARGET) \
	  --seconds $(LOAD_S) --users $(LOAD_USERS) --results-md bench/RESULTS.md

# The GPU bench on a machine without network (docs/gpu.md): the cp312 manylinux wheels its python
# lacks (pinned as in requirements.lock) and the MediaPipe face + pose models (a bake mirror)
# into the ignored .whl/ folder, ~52 MiB; carried to the machine with the working tree.
GPU_WHEELS := diffusers==0.42.1 pydantic==2.14.3 pydantic_core==2.50.4 annotated-types==0.8.0 \
  typing-inspection==0.4.5 typing_extensions==4.16.0 pydantic-settings==2.16.3 \
  python-dotenv==1.2.4 isal==1.9.1 pillow==13.0.0 pillow-heif==1.8.1 importlib_metadata==10.2.0 \
  ai-edge-litert==2.3.0 backports.strenum==1.2.8
GPU_PLATFORMS := $(foreach p,manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 \
  manylinux2014_x86_64 manylinux1_x86_64,--platform $(p))
gpu-wheels:  # (needs `make dev-weights` once: the MediaPipe models come from there)
	$(PY) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
	  --implementation cp $(GPU_PLATFORMS) -d .whl $(GPU_WHEELS)
	$(PY) -m bench.gpu_carry --weights $${MASKPAINT_TEST_WEIGHTS_DIR:-$(WEIGHTS)} --out .whl

schema: setup
	$(PY) -m handlers.schema
	cd clients/ts && { test -d node_modules || npm ci; } && npm run gen

clean:
	rm -rf $(VENV) $(WEIGHTS) outputs .pytest_cache clients/ts/node_modules clients/ts/dist \
	  clients/mask-editor/node_modules clients/ts/e2e/node_modules clients/ts/e2e/.next
