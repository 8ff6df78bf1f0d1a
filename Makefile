# Two commands on a fresh machine with Python 3.10+:  `make demo`  and  `make test`.
# Each creates (or reuses) the virtual environment in $(VENV) and installs fgvc into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is installed first so that a machine's own pins or local wheels decide it; override with e.g.
#   make test TORCH="torch==2.14.1 torchvision==0.29.1"
TORCH ?= torch torchvision
DEMO_ARGS ?=
PYTEST_ARGS ?=

.PHONY: venv demo test lint clean

$(BIN)/.fgvc-installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[notebooks,dev]'
	touch $@

venv: $(BIN)/.fgvc-installed

demo: venv
	HF_HUB_OFFLINE=1 $(BIN)/fgvc demo $(DEMO_ARGS)

test: venv
	FGVC_SMOKE=1 HF_HUB_OFFLINE=1 $(BIN)/python -m pytest tests --nbmake notebooks $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check fgvc tests benchmarks notebooks scripts

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
