# KD Companion — `make book` and `make test` are the two commands of the README.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.kdtools-installed

# On the course's own machines MNIST lies beside the repository (no downloads there).
ifeq ($(origin KDTOOLS_DATA), undefined)
  ifneq ($(wildcard ../shared/data/MNIST/raw),)
    export KDTOOLS_DATA := $(abspath ../shared/data)
  endif
endif

.PHONY: book test unit nbval book-check execute lab student sync results bench venv clean

$(STAMP): requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	@touch $@

venv: $(STAMP)

## make book: build the static book into _build/html (warnings are errors)
book: $(STAMP)
	$(BIN)/jupyter-book build . --builder html --warningiserror --keep-going
	@echo "The book is at file://$(CURDIR)/_build/html/index.html"

## make test: unit tests, every notebook under nbval in smoke mode, the book build
test: unit nbval book-check

unit: $(STAMP)
	$(BIN)/python -m pytest tests -q

nbval: $(STAMP)
	KDTOOLS_SMOKE=1 $(BIN)/python -m pytest -q --nbval-lax --nbval-current-env -p no:cacheprovider notebooks

# --all: an incremental build can hide the warnings of pages that did not change
book-check: $(STAMP)
	$(BIN)/jupyter-book build . --all --builder html --warningiserror --keep-going --quiet

## make execute: re-run every notebook in full mode, store its outputs and results/*.json, refresh student/
execute: $(STAMP)
	$(BIN)/python tools/execute_notebooks.py notebooks
	$(BIN)/python tools/make_student.py
	$(BIN)/python -m kdtools.results render

## make lab: Jupyter Lab in the course environment
lab: $(STAMP)
	$(BIN)/jupyter lab notebooks

## make student: regenerate student/ (every notebook with its solutions replaced by stubs) and the links to it
student: $(STAMP)
	$(BIN)/python tools/make_student.py

## make sync: regenerate the Colab badge and install cell at the top of every notebook
sync: $(STAMP)
	$(BIN)/python tools/sync_notebooks.py

## make results: rewrite the table on book/results.md from results/*.json
results: $(STAMP)
	$(BIN)/python -m kdtools.results render

## make bench: train every method of kdtools.run on the shared protocol (resumes), then write book/benchmark.md
bench: $(STAMP)
	$(BIN)/python -m kdtools.benchmark run

clean:
	rm -rf _build
