# GestaltLens: `make run` serves the app, `make test` runs every test. Both create .venv when missing.
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch is installed first and pinned, so the project's torch range installs nothing more
# (a loose requirement would pull a multi-GB CUDA build).
TORCH ?= torch==2.13.0
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test install lint bench screenshots clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[test]"
	# Quantus (tests only, tests/evaluate/test_quantus.py): --no-deps, as its opencv-python requirement would
	# overwrite our opencv-python-headless (same cv2 package); what it imports is in the test extra
	$(PY) -m pip install --quiet --no-deps "quantus==0.6.0"
	touch $@

install: $(VENV)/.installed

run: install
	$(VENV)/bin/gestaltlens db upgrade
	$(VENV)/bin/gestaltlens serve --host $(HOST) --port $(PORT) --no-upgrade

test: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports --no-cache --no-logo
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports --no-cache --no-logo

bench: install
	$(PY) bench/bench_vision.py
	$(PY) bench/bench_explain.py

# README screenshots (case page, explanation grid, rating page): a real server and Chromium, generated faces only.
screenshots: install
	$(PY) -m tests.screenshots docs/screenshots

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
