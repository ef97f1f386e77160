# The two commands of the README: `make demo` and `make test`.
# Both create or reuse .venv and install what they need; nothing relies on a hand install.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml host/pyproject.toml constraints.txt | sha256sum | cut -c1-12)
# The extras of the two distributions: the board's edge-agent (pyproject.toml) and the
# host's edgectl (host/pyproject.toml), both installed editable.
AGENT_EXTRAS ?= device,tflite,plc
HOST_EXTRAS ?= host,tflite-export,dev

.PHONY: install demo test test-slow test-board test-arm64 lint bench clean

# PYTHONWARNINGS: setuptools' notice that an editable install of a package spread over
# several folders goes through an import hook; it says nothing about the project.
$(STAMP): pyproject.toml host/pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	PYTHONWARNINGS='ignore:Editable installation' $(PIP) install -q -c constraints.txt \
	  -e '.[$(AGENT_EXTRAS)]' -e './host[$(HOST_EXTRAS)]'
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m edgectl.demo

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

# The deploy path against a real Debian host (tests/board/testhost.sh; needs root,
# debootstrap, systemd-container, iproute2, iptables, openssh-client).
test-board: $(STAMP)
	$(PY) -m pytest -q -m board --timeout 1800 tests/board

# arm64 userland under qemu-user (root; tests/arm64/arm64root.sh). Records the smoke figures
# in benchmarks/results/arm64.md. Root tarball cache: EDGECTL_ARM64_CACHE.
test-arm64: $(STAMP)
	EDGECTL_ARM64_RESULTS=benchmarks/results $(PY) -m pytest -q -m arm64 tests/arm64

# ruff; mypy under pyproject's [tool.mypy]; the import contracts of [tool.importlinter].
lint: $(STAMP)
	$(VENV)/bin/ruff check common host device tests benchmarks
	$(VENV)/bin/mypy common host device
	$(VENV)/bin/lint-imports --no-cache

clean:
	rm -rf runs .pytest_cache
