# Everything from nothing on Debian: system packages, .venv, torch (CPU), the package.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
XASR := $(VENV)/bin/xasr
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := espeak-ng fortunes fortunes-es fortunes-de fortunes-it fortunes-br fortunes-zh libsndfile1
# FreeDict bilingual dictionaries (xasr.data.lexicon): word-by-word translation, offline.
APT_PACKAGES += dict-freedict-spa-eng dict-freedict-eng-spa
# ... and the English-German/-Italian/-Portuguese ones: pseudo-labels of the ST experiments.
APT_PACKAGES += dict-freedict-eng-deu dict-freedict-eng-ita dict-freedict-eng-por
# Apertium rule-based English-Spanish MT (xasr translate --backend apertium), and the
# Spanish-Portuguese pair for pivoting English to Portuguese (modes eng-spa,es-pt).
APT_PACKAGES += apertium-eng-spa apertium-es-pt
# Compilers, headers and libraries for kenlm (the Python package builds from source) and lmplz.
APT_PACKAGES += g++ cmake python3-dev libboost-program-options-dev libboost-system-dev libboost-thread-dev \
	libboost-test-dev zlib1g-dev libbz2-dev liblzma-dev
LMPLZ := $(VENV)/bin/lmplz

.PHONY: test test-fast demo base-model system venv lm-tools lint clean fillets

test: system venv lm-tools
	$(PY) -m pytest -q -x

# The suite without the tests marked slow (training, whole commands): a quick check while coding.
test-fast: system venv lm-tools
	$(PY) -m pytest -q -x -m "not slow"

demo: system venv lm-tools
	$(XASR) demo --out runs/demo

# Trains the shipped English base model with the committed recipe (an hour or two on 2 CPU
# cores, minutes on a GPU), then copies it into xasr/pretrained/en-small.
base-model: system venv
	$(XASR) base-model --recipe recipes/en-small.yaml --out runs/base-en-small

# Real human speech: Fish Fillets NG's Czech voice acting (about 96 minutes, GPL-2+), installed
# from Debian, never copied into the repository; read with `xasr prepare fillets`.
FILLETS_DIR := /usr/share/games/fillets-ng
fillets:
	@dpkg -s fillets-ng-data fillets-ng-data-cs >/dev/null 2>&1 || { \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq fillets-ng-data fillets-ng-data-cs >/dev/null; }
	@echo "Fish Fillets NG data in $(FILLETS_DIR)"

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
	$(PY) -m pip install -q -e '.[dev,onnx,hf,vad]'
	# pyctcdecode's metadata pins numpy<2 (untested upper bound; it runs on numpy 2), which would
	# make pip downgrade numpy under audiomentations: install it without its dependencies (its
	# runtime one, pygtrie, is in pyproject.toml).
	$(PY) -m pip install -q --no-deps pyctcdecode==0.5.0
	touch $(STAMP)

# KenLM's lmplz (trains ARPA n-gram models) and build_binary are not on PyPI: build them from the
# C++ tree of the kenlm source distribution, the version of the installed kenlm package (about
# 2 minutes on 2 cores; skipped once built).
lm-tools: system venv $(LMPLZ)

$(LMPLZ): | $(STAMP)
	set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	version=$$($(PY) -c 'import importlib.metadata as m; print(m.version("kenlm"))'); \
	$(PY) -m pip download -q --no-deps --no-binary kenlm "kenlm==$$version" -d "$$tmp"; \
	tar -xzf "$$tmp"/kenlm-*.tar.gz -C "$$tmp"; \
	{ cmake -S "$$tmp/kenlm-$$version" -B "$$tmp/build" -DCMAKE_BUILD_TYPE=Release && \
	  cmake --build "$$tmp/build" --target lmplz build_binary -j "$$(nproc)"; } \
	  >"$$tmp/build.log" 2>&1 || { tail -n 40 "$$tmp/build.log"; exit 1; }; \
	cp "$$tmp/build/bin/build_binary" "$$tmp/build/bin/lmplz" $(VENV)/bin/

lint: venv
	$(VENV)/bin/ruff check xasr tests bench
	$(VENV)/bin/lint-imports --no-cache

clean:
	rm -rf $(VENV) runs
