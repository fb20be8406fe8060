# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch 2.14.1 / torchvision 0.29.1 are the releases this project is tested with (never ask for a newer
# torch here); override on another machine, e.g. make TORCH="torch torchvision" test
TORCH  ?= torch==2.14.1 torchvision==0.29.1
export WANDB_SILENT ?= true

.PHONY: demo test bench install clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) -m tfm fit --config configs/vit_tiny_fashion.yaml

test: install
	WANDB_MODE=offline HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) -m pytest -q

bench: install
	$(PY) benchmarks/run_all.py --quick

clean:
	rm -rf $(VENV) runs .pytest_cache
