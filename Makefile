# The two commands of the README: `make demo` and `make test`.
# Both create or reuse .venv and install what they need; nothing relies on a hand install.
# As root they first install the Debian packages they need (the lists below, one
# apt-get); as another user they name what is missing and stop before anything runs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml host/pyproject.toml locks/host.txt | sha256sum | cut -c1-12)
# The extras of the two distributions: the board's edge-agent (pyproject.toml) and the
# host's edgectl (host/pyproject.toml), both installed editable.
AGENT_EXTRAS ?= device,tflite,plc
HOST_EXTRAS ?= host,tflite-export,dev

.PHONY: install lock demo test test-slow test-board test-arm64 test-fresh lint bench clean \
	venv-packages system-packages board-packages

# Debian/Ubuntu packages, one list per need (tests/system-packages.sh installs or names them;
# .ci/run goes through these targets too):
# - VENV_DEBS: what `python3 -m venv` needs on Debian (its python3 has no ensurepip without it),
# - TEST_DEBS: what the test suite runs for real: systemd (systemd-analyze verifies the agent's
#   unit), mosquitto (the MQTT tests' broker, tests/device/plckit.py), postgresql (a throwaway
#   cluster of the tests' own, tests/pgkit.py; the package's main cluster is not used),
#   chromium (the fleet pages' browser test, tests/web, driven by PyPI's Playwright), libatomic1
#   (the node binary of Playwright's driver links it; a fresh minbase Debian lacks it),
# - BOARD_DEBS: the real-host suites: a debootstrap'd Debian booted with systemd-nspawn
#   (tests/board, tests/fresh) and the arm64 userland under qemu-user (tests/arm64).
VENV_DEBS := python3 python3-venv
TEST_DEBS := $(VENV_DEBS) systemd mosquitto postgresql chromium libatomic1
BOARD_DEBS := debootstrap systemd-container iproute2 iptables openssh-client \
	qemu-user-static binfmt-support mmdebstrap

venv-packages:
	@sh tests/system-packages.sh $(VENV_DEBS)

system-packages:
	@sh tests/system-packages.sh $(TEST_DEBS)

board-packages:
	@sh tests/system-packages.sh $(BOARD_DEBS)

# The venv installs exactly the lock (locks/host.txt: every distribution pinned, with its
# hashes, for both distributions' extras above; `make lock` refreshes it), then the two
# projects editable without resolving anything more; `pip check` fails the install if the
# lock no longer covers what a pyproject asks for (run `make lock`).
# PYTHONWARNINGS: setuptools' notice that an editable install of a package spread over
# several folders goes through an import hook; it says nothing about the project.
$(STAMP): pyproject.toml host/pyproject.toml locks/host.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q --require-hashes --no-deps -r locks/host.txt
	PYTHONWARNINGS='ignore:Editable installation' $(PIP) install -q --no-deps \
	  -e '.[$(AGENT_EXTRAS)]' -e './host[$(HOST_EXTRAS)]'
	$(PIP) check
	rm -f $(VENV)/.installed-* && touch $@

# Refresh locks/host.txt from the two pyprojects (their extras above) and constraints.txt,
# keeping every pin that still fits; `make lock UPGRADE=1` moves every pin to the newest
# release. uv resolves for every platform (--universal) from PyPI; the lock is then
# installed by pip, with its hashes checked.
lock:
	printf -- '-e .[$(AGENT_EXTRAS)]\n-e ./host[$(HOST_EXTRAS)]\n' | \
	  $(VENV)/bin/uv pip compile - -c constraints.txt --universal --python-version 3.11 \
	  --generate-hashes --native-tls --no-emit-package edge-agent --no-emit-package edgectl \
	  --custom-compile-command 'make lock' $(if $(UPGRADE),--upgrade) -o locks/host.txt

install: venv-packages $(STAMP)

demo: venv-packages $(STAMP)
	$(PY) -m edgectl.demo

test: system-packages $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-slow: system-packages $(STAMP)
	$(PY) -m pytest -q -m slow

# The deploy path against a real Debian host (tests/board/testhost.sh; needs root,
# debootstrap, systemd-container, iproute2, iptables, openssh-client).
test-board: board-packages $(STAMP)
	$(PY) -m pytest -q -m board --timeout 1800 tests/board

# The README's set-up on a fresh Debian machine (tests/fresh/freshhost.sh: a minbase root
# under systemd-nspawn; root): `make test` there, on the tests that need each system package.
test-fresh: board-packages $(STAMP)
	$(PY) -m pytest -q -m board --timeout 3600 tests/fresh

# arm64 userland under qemu-user (root; tests/arm64/arm64root.sh). Records the smoke figures
# in benchmarks/results/arm64.md. Root tarball cache: EDGECTL_ARM64_CACHE.
test-arm64: board-packages $(STAMP)
	EDGECTL_ARM64_RESULTS=benchmarks/results $(PY) -m pytest -q -m arm64 tests/arm64

# ruff; mypy under pyproject's [tool.mypy]; the import contracts of [tool.importlinter].
lint: venv-packages $(STAMP)
	$(VENV)/bin/ruff check common host device tests benchmarks
	$(VENV)/bin/mypy common host device
	$(VENV)/bin/lint-imports --no-cache

clean:
	rm -rf runs .pytest_cache
