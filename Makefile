# One command to install and run, one to install and test. The virtual environment lives in .venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install install-dev run serve cluster test lint format bench bench-floor bench-smoke bench-external bench-instructions clean

$(VENV)/.runtime: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(BIN)/pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $@

install: $(VENV)/.runtime
install-dev: $(VENV)/.dev

.env:
	$(PYTHON) scripts/make_env.py

run: install .env
	$(BIN)/python run.py

serve: install .env
	$(BIN)/flask --app wsgi db upgrade
	$(BIN)/gunicorn -c gunicorn.conf.py wsgi:app

test: install-dev
	$(BIN)/python -m pytest

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

cluster: install .env
	command -v nginx >/dev/null || (apt-get update -qq && apt-get install -y -qq nginx)
	$(BIN)/python scripts/cluster.py

bench-external: install-dev
	$(BIN)/python bench/external_proxy.py

# Side-by-side benchmark against nginx, LiteLLM and Portkey on loopback (several minutes): bench/README.md
bench: install
	$(BIN)/python bench/run.py

# The gateway beside a bare Flask relay under the same server (what server and framework cost): bench/README.md
bench-floor: install
	$(BIN)/python bench/run.py --targets direct,flask,gateway --output bench/results/floor.md

# Every scenario for a few seconds against the gateway alone; fails if any errors (CI runs it).
bench-smoke: install
	$(BIN)/python bench/run.py --smoke

# Instructions per proxied call (callgrind): a hot-path figure the host's load does not move.
bench-instructions: install
	command -v valgrind >/dev/null || (apt-get update -qq && apt-get install -y -qq valgrind)
	$(BIN)/python bench/call_cost.py
	$(BIN)/python bench/call_cost.py --stream 50

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
