# fedstream: two entry points on a fresh machine.
#   make demo   broker + cloud + 3 edges, 5 federated rounds on the built-in digits data
#   make demo-sensors   the same on live sensor streams: BasicMotions replayed over MQTT, a 1-D CNN
#   make test   lint + type check, then the test suite on both torch stacks (IPEX 2.8, torch 2.13)
#   make wheel  dist/fedstream-*.whl, to install as systemd services (README, "Installing")
# Each installs what it needs: Mosquitto (apt) and the virtual environments (pip).

PYTHON ?= python3
VENV ?= .venv
STOCK_VENV ?= .venv-stock
WHEEL_VENV ?= build/wheel-venv
PYTEST_ARGS ?=
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo demo-sensors test test-ipex test-stock lint mosquitto ejabberd wheel clean

demo: mosquitto $(VENV)/.installed
	$(VENV)/bin/fedstream demo --rounds 5 --edges 3 --min-accuracy 0.90

# Edges learning from live sensor streams: BasicMotions replayed over MQTT, a 1-D CNN.
demo-sensors: mosquitto $(VENV)/.installed
	$(VENV)/bin/fedstream demo --sensors --rounds 5 --edges 3 --min-accuracy 0.70

test: lint test-ipex test-stock

test-ipex: mosquitto ejabberd $(VENV)/.installed
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

test-stock: mosquitto ejabberd $(STOCK_VENV)/.installed
	$(STOCK_VENV)/bin/python -m pytest $(PYTEST_ARGS)

# mypy resolves modules by folder name, and ours are mapped (shared/ is fedstream.shared), so it
# checks a tree of symlinks laid out as the installed package.
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	rm -rf build/typecheck && mkdir -p build/typecheck/fedstream
	ln -s $(CURDIR)/fedstream/*.py build/typecheck/fedstream/
	for d in shared cloud edge_node broker; do ln -s $(CURDIR)/$$d build/typecheck/fedstream/$$d; done
	cd build/typecheck && $(CURDIR)/$(VENV)/bin/mypy --strict -p fedstream

mosquitto:
	@command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || \
	  { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q mosquitto; }

# The two-node cluster tests start their own nodes (broker/ejabberd.py). The package's own
# ejabberd.service would hold port 1883 and the XMPP ports: off where systemd runs.
ejabberd:
	@command -v ejabberdctl >/dev/null || [ -x /usr/sbin/ejabberdctl ] || \
	  { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q ejabberd; }
	@if [ -d /run/systemd/system ] && { systemctl is-enabled --quiet ejabberd.service || \
	  systemctl is-active --quiet ejabberd.service; }; then \
	  $(SUDO) systemctl disable --now ejabberd.service; fi

# Default stack: torch 2.8 with its matching Intel Extension for PyTorch 2.8.0.
# Both stacks install aeon 1.6.0 without its dependencies only for its bundled data files (the
# BasicMotions .ts archive the sensor replay and the sensor_archive source read as text): the
# package is never imported.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -e '.[ipex,dev]'
	$(VENV)/bin/pip install -q --no-deps 'aeon==1.6.0'
	touch $@

# Stock stack: the CPU wheel of torch 2.13.0, no IPEX. Pinned exactly: a looser spec pulls
# a multi-GB CUDA build.
$(STOCK_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(STOCK_VENV)
	$(STOCK_VENV)/bin/pip install -q 'torch==2.13.0'
	$(STOCK_VENV)/bin/pip install -q -e '.[dev]'
	$(STOCK_VENV)/bin/pip install -q --no-deps 'aeon==1.6.0'
	touch $@

# The wheel carries the package, the units, the example configs and the docs; a small venv of
# its own builds it (pip fetches the build backend), so it needs neither torch stack.
wheel:
	$(PYTHON) -m venv $(WHEEL_VENV)
	# A stale build/lib (a module since removed) would be packed again.
	rm -rf build/lib build/bdist.*
	$(WHEEL_VENV)/bin/pip wheel -q --no-deps -w dist .

clean:
	rm -rf $(VENV) $(STOCK_VENV) $(WHEEL_VENV) demo-run dist
