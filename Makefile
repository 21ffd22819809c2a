# Two entry points (see README): `make run` and `make test`. Both build everything they need.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DATA   ?= $(abspath ../shared/data/cifar10)
export XAI_DATA_DIR ?= $(DATA)

.PHONY: run test setup system-deps bench clean

$(STAMP): pyproject.toml xai_dashboard/vendor.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch/torchvision first and pinned: the local wheel cache has exactly these versions.
	$(BIN)/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install --quiet -e '.[test]'
	# the browser's plotly.js: the strict bundle, WebGL under our CSP (see xai_dashboard/vendor.py); optional
	$(BIN)/python -m xai_dashboard.vendor
	touch $(STAMP)

setup: $(STAMP)

# Debian's Chromium and its driver, for the browser tests (dash_duo).
system-deps:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium chromium-driver; \
	fi

run: setup
	$(BIN)/xai-dashboard --host 127.0.0.1 --port 8050

test: setup system-deps
	$(BIN)/python -m pytest -q --timeout=900

bench: setup
	# locust needs urllib3 2, which selenium (browser tests) does not allow: its own venv
	test -x .venv-locust/bin/locust || ($(PYTHON) -m venv .venv-locust && .venv-locust/bin/pip install --quiet locust==2.47.0 numpy==2.4.6 pillow==13.0.0)
	$(BIN)/python bench/train_throughput.py
	$(BIN)/python bench/inference_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache
