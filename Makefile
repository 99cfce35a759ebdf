# Two entry points for a fresh machine with Python 3.11 and make: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# The stamp is rebuilt whenever the pins or the project metadata change.
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast bench bench-all bench-backfill lock clean

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

demo: setup
	$(BIN)/tiers demo

test: setup
	$(BIN)/python -m pytest -q

# Skips the slow group (golden scenarios through the CLI stay in).
test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

# Regenerates requirements.lock from the ranges in pyproject.toml (run, review, commit).
lock:
	rm -rf .lockenv && $(PYTHON) -m venv .lockenv
	.lockenv/bin/python -m pip install --quiet -e '.[test]'
	.lockenv/bin/python -m pip freeze --exclude-editable | grep -v '^-e' > requirements.lock
	rm -rf .lockenv

clean:
	rm -rf $(VENV) data/warehouse data/landing

# Times a cold `tiers backfill` of 100,000 synthetic customers over 12 month-ends (minutes; not in `make test`).
bench-backfill: setup
	$(BIN)/python bench/backfill_bench.py --customers 100000

# The month-end benchmark: a cold first month and a warm month-end at 250,000 and 1,000,000 customers
# (how cost scales with customers); CUSTOMERS="1000000" measures one size.
CUSTOMERS ?= 250000 1000000
bench: setup
	$(BIN)/python bench/month_end_bench.py --customers $(CUSTOMERS)
