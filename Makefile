# The two commands a newcomer runs: `make run` (the quickstart sweep) and `make test`.
# Both set up .venv first and are idempotent.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: setup run test lint browser

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[tasks,dev,track,swm]'
	touch $(STAMP)

setup: $(STAMP)

# Local Ray, sweeps/quickstart.yaml, ends with the leaderboard. --resume makes a rerun cheap.
run: setup
	$(PY) -m harness.run sweeps/quickstart.yaml --resume

# Debian's Chromium, for the leaderboard page's browser test (no browser download).
browser:
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# Two pytest-xdist workers, one test file each at a time (a file's module fixtures are made once).
test: setup browser lint
	$(PY) -m pytest -q -n 2 --dist loadfile
