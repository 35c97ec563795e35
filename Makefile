# sparseflow: `make demo` sets up and runs the main job (the default study); `make test` sets up
# and runs the tests.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
FMNIST := /usr/share/datasets/fashion-mnist

.PHONY: setup data demo test lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0 numpy
	$(PY) -m pip install -q -e ".[all,test]"
	touch $@

setup: $(VENV)/.installed

# Fashion-MNIST from Debian's dataset-fashion-mnist when possible; otherwise sparseflow
# downloads it from the canonical address on first use.
data:
	@if [ ! -d $(FMNIST) ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		(apt-get install -y -qq dataset-fashion-mnist || \
		 (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)) >/dev/null; \
	fi

demo: setup data
	$(VENV)/bin/sparseflow demo

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks

test: setup data lint
	$(PY) -m pytest -q -n 2 --dist loadfile

bench: setup data
	$(PY) benchmarks/loop_overhead.py

clean:
	rm -rf $(VENV) sparseflow-runs .pytest_cache
