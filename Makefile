# Newcomer entry points: `make demo` (install + predict a mask end to end) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The torch build this project is developed and tested against; pip takes it from the local wheel cache.
TORCH_PIN ?= torch==2.14.1 torchvision==0.29.1

.PHONY: install demo test test-all bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PIN)
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) examples/demo.py --out-dir demo_out

test: install
	$(PY) -m pytest -q

test-all: install
	$(PY) -m pytest -q -m "slow or not slow"

bench: install
	$(PY) benchmarks/bench_predict.py

clean:
	rm -rf $(VENV) demo_out .pytest_cache
