# Two entry points for a fresh machine: `make demo` and `make test`.
# Both build .venv from nothing with the stdlib venv + pip (pip sees the local
# torch wheel cache; uv/poetry would download gigabytes).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.capgrade-installed

.PHONY: venv demo test lint stub clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,instructor]'
	touch $(STAMP)

demo: venv
	$(VENV)/bin/capgrade demo

# Lint first: CI runs `make test` (the README's command), so it lints too.
test: venv
	$(MAKE) lint
	$(PY) -m pytest -q

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

stub: venv
	$(VENV)/bin/capgrade build-stub

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .mypy_cache
