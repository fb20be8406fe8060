# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch 2.14.1 / torchvision 0.29.1 are the releases this project is tested with (never ask for a newer
# torch here); override on another machine, e.g. make TORCH="torch torchvision" test
TORCH  ?= torch==2.14.1 torchvision==0.29.1
export WANDB_SILENT ?= true

.PHONY: demo test bench bench-gpu install slurm-deps clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) -m tfm fit --config configs/vit_tiny_fashion.yaml

# the Slurm tests run a real two-node Slurm on localhost: as root on Debian, install it (skipped elsewhere)
slurm-deps:
	@if [ "$$(id -u)" = 0 ] && [ -f /etc/debian_version ] && ! command -v slurmctld >/dev/null; then \
	  echo "installing slurm-wlm and munge for the Slurm tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null; fi

test: install slurm-deps
	WANDB_MODE=offline HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) -m pytest -q

bench: install
	$(PY) benchmarks/run_all.py --quick

# the GPU suite on one CUDA device (every task at its GPU size through the CLI, then the side-by-side
# benchmarks), sized for 8 minutes (not yet timed on a GPU); QUICK=1: tiny sizes on the CPU (the test suite runs it)
bench-gpu: install
	WANDB_MODE=offline $(PY) benchmarks/gpu_suite.py $(if $(QUICK),--quick)

clean:
	rm -rf $(VENV) runs .pytest_cache
