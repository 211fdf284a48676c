# wfs: `make demo` mounts sample runs from the local W&B-compatible server,
# `make test` runs the whole suite. Both install what they need first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
STAMP  := $(VENV)/.installed

.PHONY: install demo demo-stop test bench bench-quick clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	@command -v fusermount3 >/dev/null 2>&1 || { \
	  echo "Installing Debian's fuse3 (fusermount3 is missing)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fuse3; }
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || { \
	  echo "Installing Debian's python3-venv"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv; }
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

demo: install
	$(PY) scripts/demo.py

demo-stop:
	-$(PY) scripts/demo.py --stop

test: install
	$(PY) -m pytest -q

bench: install
	$(PY) scripts/bench.py

bench-quick: install
	$(PY) scripts/bench.py --quick

clean:
	-$(PY) scripts/demo.py --stop 2>/dev/null
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .hypothesis bench-results.json .demo
