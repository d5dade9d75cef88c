# The two commands of the README, `make demo` and `make test`, and `make bench`. Everything they need is installed here.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
# The systemd image is named after its recipe: hls-debian-systemd:bookworm-<hash of tools/build-image.sh>.
ifeq ($(origin HLS_IMAGE),undefined)
HLS_IMAGE := $(shell bash tools/build-image.sh --name)
endif
DEMO_CONTAINER := hls-demo
DEMO_PORT ?= 8080
# One molecule container, loopback port and molecule state per checkout (several checkouts test side by side on
# one engine): the id from a hash of this directory, the port from the id, moved on when something listens there.
ifeq ($(origin HLS_MOLECULE_ID),undefined)
HLS_MOLECULE_ID := $(shell pwd -P | sha256sum | cut -c1-8)
endif
HLS_MOLECULE_HTTP_PORT ?= $(shell python3 tools/free-port.py $(HLS_MOLECULE_ID))
# $(call molecule_env,SCENARIO): molecule's state is per checkout and per scenario.
molecule_env = HLS_MOLECULE_ID=$(HLS_MOLECULE_ID) HLS_MOLECULE_HTTP_PORT=$(HLS_MOLECULE_HTTP_PORT) \
	HLS_MOLECULE_IMAGE=$(HLS_IMAGE) MOLECULE_EPHEMERAL_DIRECTORY=$(HOME)/.ansible/tmp/molecule.hls-$(HLS_MOLECULE_ID).$(1)
SCENARIO ?= default
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export PATH := $(CURDIR)/$(BIN):$(PATH)

# make bench: the station-cost, serving and reaction-time benchmarks (docs/benchmarks.md); about 17 minutes.
BENCH_STATIONS ?= 10
BENCH_WINDOW ?= 20
BENCH_ROUNDS ?= 3
BENCH_SERVING_SECONDS ?= 10
BENCH_SCALE_STATIONS ?= 1000
BENCH_SCALE_WINDOW ?= 60
BENCH_RESTART_STATIONS ?= 3
BENCH_ENV = BENCH_STATIONS=$(BENCH_STATIONS) BENCH_WINDOW=$(BENCH_WINDOW) BENCH_ROUNDS=$(BENCH_ROUNDS) \
	BENCH_SERVING_SECONDS=$(BENCH_SERVING_SECONDS) BENCH_SCALE_STATIONS=$(BENCH_SCALE_STATIONS) \
	BENCH_SCALE_WINDOW=$(BENCH_SCALE_WINDOW) BENCH_RESTART_STATIONS=$(BENCH_RESTART_STATIONS) IMAGE=$(HLS_IMAGE)

.PHONY: test lint unit molecule molecule-env demo demo-clean engine image bench bench-scale bench-analytics \
	bench-edge browser players

test: lint unit molecule

$(BIN)/.installed: requirements-dev.txt files/scripts/requirements.txt files/scripts/pyproject.toml
	bash tools/ensure-packages.sh venv
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt 2> >(grep -v 'is ignored' >&2)
	touch $@

# ruff: every Python file of the repository (ruff.toml); mypy --strict: the package (files/scripts/pyproject.toml).
lint: $(BIN)/.installed
	$(BIN)/yamllint --strict .
	$(BIN)/python tools/reference.py --check
	$(BIN)/ansible-lint --profile production --offline
	$(BIN)/ruff check .
	cd files/scripts && ../../$(BIN)/mypy

# tests/unit/test_placement.py checks the placement ring against a throwaway Debian nginx (/usr/sbin/nginx, on root's
# PATH but not always on a user's); tests/unit/test_monitoring.py runs Debian's promtool on the alert rules.
# Debian's ffmpeg and ffprobe: the probe, timed ID3 and multivariant tests run them on real streams.
unit: $(BIN)/.installed
	PATH="$$PATH:/usr/sbin" bash tools/ensure-packages.sh nginx promtool ffmpeg
	$(BIN)/pytest -q tests/unit

engine:
	bash tools/ensure-docker.sh

image: engine
	bash tools/build-image.sh $(HLS_IMAGE)

# The browser test drives Debian's Chromium (never a downloaded browser) with playwright-core from npm.
browser: tests/browser/node_modules/.installed
	bash tools/ensure-packages.sh chromium

# The player matrix plays on this machine with Debian's players, and hls.js (npm, tests/browser) in Chromium.
players: browser
	bash tools/ensure-packages.sh ffmpeg mpv vlc gstreamer

tests/browser/node_modules/.installed: tests/browser/package.json tests/browser/package-lock.json
	bash tools/ensure-packages.sh node
	cd tests/browser && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# $(call failed_tests,SCENARIO): after a scenario failed, its failed tests last in the log (tools/failures.py).
failed_tests = { $(BIN)/python tools/failures.py artifacts/molecule-$(1).xml; exit 1; }

# default: the whole behaviour; paths: every path an operator can set moved, a few minutes more; network: two
# origins and an edge.
molecule: $(BIN)/.installed image players
	mkdir -p artifacts
	rm -f artifacts/molecule-*.xml
	$(call molecule_env,default) $(BIN)/molecule test || $(call failed_tests,default)
	$(call molecule_env,paths) $(BIN)/molecule test -s paths || $(call failed_tests,paths)
	$(call molecule_env,network) $(BIN)/molecule test -s network || $(call failed_tests,network)

# For molecule by hand (converge, login, verify): eval "$$(make -s molecule-env)", or SCENARIO=paths and -s paths.
molecule-env:
	@printf 'export %s\n' $(call molecule_env,$(SCENARIO))

demo: $(BIN)/.installed image
	bash tools/demo.sh $(DEMO_CONTAINER) $(HLS_IMAGE) $(DEMO_PORT)

demo-clean:
	-docker rm -f $(DEMO_CONTAINER)

# Session log lines parsed per second, side by side with GoAccess; the table goes to docs/benchmarks.md.
bench-analytics: $(BIN)/.installed
	command -v goaccess >/dev/null || apt-get install -y goaccess
	$(BIN)/python benchmarks/analytics.py --write docs/benchmarks.md

# Origin requests/s with 10, 100 and 1,000 listeners straight to an origin vs through the edge's nginx.conf, and the
# edge's requests/s vs a plain nginx, on this machine's loopback (about 2 minutes); the tables go to docs/benchmarks.md.
bench-edge: $(BIN)/.installed
	PATH="$$PATH:/usr/sbin" bash tools/ensure-packages.sh nginx wrk
	PATH="$$PATH:/usr/sbin" $(BIN)/python benchmarks/edge.py --write docs/benchmarks.md

bench: $(BIN)/.installed image
	$(BENCH_ENV) bash benchmarks/bench.sh all

bench-scale: $(BIN)/.installed image
	$(BENCH_ENV) bash benchmarks/bench.sh scale
