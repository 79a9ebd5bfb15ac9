# Everything from nothing on Debian: system packages, .venv, torch (CPU), the package.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
XASR := $(VENV)/bin/xasr
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := espeak-ng fortunes fortunes-es fortunes-de fortunes-it fortunes-br fortunes-zh libsndfile1

.PHONY: test demo base-model system venv lint clean

test: system venv
	$(PY) -m pytest -q -x

demo: system venv
	$(XASR) demo --out runs/demo

# Trains the shipped English base model with the committed recipe (an hour or two on 2 CPU
# cores, minutes on a GPU), then copies it into xasr/pretrained/en-small.
base-model: system venv
	$(XASR) base-model --recipe recipes/en-small.yaml --out runs/base-en-small

system:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU build of torch, pinned: an unpinned torch pulls a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

lint: venv
	$(VENV)/bin/ruff check xasr tests bench

clean:
	rm -rf $(VENV) runs
