# The two commands of the README: `make demo` (the main job) and `make test`.
# Each creates the virtualenv in .venv and installs the package when missing.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint venv clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python notebooks/run_demo.py --fresh

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The main suite, and meanwhile the in-process tiers on Python 3.10 and 3.13.
test: lint
	bash scripts/system-deps.sh
	bash scripts/other-pythons.sh > .other-pythons.log 2>&1 & other=$$!; \
	$(BIN)/pytest; main=$$?; \
	wait $$other; others=$$?; \
	grep -v '^WARNING: Location' .other-pythons.log | tail -40; \
	exit $$(( main != 0 || others != 0 ))

clean:
	rm -rf $(VENV) .venv-3.* .other-pythons.log .awaitly .pytest_cache .mypy_cache .ruff_cache
