# Two commands for a fresh clone: `make demo` and `make test`. Each builds its own virtual
# environment (.venv) and installs what it needs; nothing else has to be set up.
# While developing: `make test-quick` (minutes) and `make check` (lint, format, types).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check -q
PLUGINS := $(sort $(patsubst %/pyproject.toml,%,$(wildcard plugins/*/pyproject.toml)))
DEMO_DIR := var/demo
PYTEST_ARGS ?=
# Tests run in parallel (pytest-xdist), one worker per core; tests that share something are
# marked `@pytest.mark.xdist_group(NAME)` and run on one worker. WORKERS=0 runs them in-process.
WORKERS ?= auto
PYTEST := $(BIN)/python -m pytest -n $(WORKERS) --dist loadgroup
# The quick suite leaves out model training, the real photographs, the browser and the
# fault-injection schedules: everything else (contract, runtime, store, QA) in a few minutes.
QUICK := not train and not data and not browser and not faults

.PHONY: demo test test-quick check docs install install-test bench clean help

help:
	@echo "make demo        run the demo station end to end (SQLite, synthetic parts)"
	@echo "make test        run the whole test suite (what CI runs)"
	@echo "make test-quick  the suite without training, real-data, browser and fault-injection tests"
	@echo "make check       ruff (lint and format) and mypy, as CI runs them before the tests"
	@echo "make docs        build the documentation site into var/site (warnings are errors)"
	@echo "make bench       print the benchmark figures (bench/*.py)"

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(PIP) install --upgrade pip setuptools wheel

# The runtime: core and every built-in plugin, editable, exactly as a third party installs one.
$(VENV)/.runtime: $(BIN)/python pyproject.toml $(wildcard plugins/*/pyproject.toml)
	$(PIP) install -e '.[serve,postgres]' $(addprefix -e ,$(PLUGINS))
	@touch $@

# Tests also need the test tools, the linters of `make check`, the example third-party plugin,
# the anomaly training and OpenVINO extras (torch is taken from this machine's disk) and a headless browser
# for the dashboard tests.
$(VENV)/.test: $(VENV)/.runtime tests/thirdparty_plugin/pyproject.toml
	$(PIP) install -e '.[test,check,docs,serve,postgres]' -e tests/thirdparty_plugin
	@if [ -f plugins/anomaly/pyproject.toml ]; then $(PIP) install -e 'plugins/anomaly[train,openvino]'; fi
	$(PIP) install -e 'plugins/sources[pylon]'  # pypylon: the pylon source's tests run on pylon's camera emulator
	$(PIP) install -e 'plugins/line[opcua]'  # asyncua: the OPC UA link's tests run a real server and client on loopback
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "could not install chromium (not root?): the browser tests will fail"; }
	@touch $@

install: $(VENV)/.runtime
install-test: $(VENV)/.test

# The demo: make good parts, teach the misalignment reference from them, run the demo station
# over 120 synthetic parts (fresh store each time), then look at the history as QA would.
demo: $(VENV)/.runtime
	@rm -rf $(DEMO_DIR) && mkdir -p $(DEMO_DIR)
	@echo "== 1. ten good parts to teach from"
	$(BIN)/inspector synth --to $(DEMO_DIR)/good --count 10 --seed 7 --kind good
	@echo "== 2. teach the golden reference of the misalignment step"
	$(BIN)/inspector teach stations/demo.yaml --from $(DEMO_DIR)/good
	@echo "== 3. run the station (120 parts: scratch, dent and misalignment detectors)"
	$(BIN)/inspector run stations/demo.yaml
	@echo "== 4. what QA sees: statistics, the latest rejects, the crops"
	$(BIN)/inspector stats --station-file stations/demo.yaml --period hour
	$(BIN)/inspector history --station-file stations/demo.yaml --verdict fail --limit 10
	$(BIN)/inspector export crops --station-file stations/demo.yaml --to $(DEMO_DIR)/crops
	@echo
	@echo "store: $(DEMO_DIR)/demo.db   reported verdicts: $(DEMO_DIR)/verdicts.jsonl   crops: $(DEMO_DIR)/crops/"
	@echo "dashboard: $(BIN)/inspector serve --station-file stations/demo.yaml  (then open http://127.0.0.1:8080)"

test: $(VENV)/.test
	$(PYTEST) $(PYTEST_ARGS)

test-quick: $(VENV)/.test
	$(PYTEST) -m "$(QUICK)" $(PYTEST_ARGS)

# The settings are in pyproject.toml ([tool.ruff], [tool.mypy]).
check: $(VENV)/.test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The site: docs/*.md and the API reference generated from the contract's docstrings (mkdocs.yml).
docs: $(VENV)/.test
	$(BIN)/mkdocs build --strict --quiet

bench: $(VENV)/.test
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) var .pytest_cache
