# clusterops: `make demo` and `make test` set everything up themselves on a fresh Debian 12 (as root).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
TORCH_PIN := torch==2.13.0
APT_PKGS := slurm-wlm munge fio iproute2 rsync xfsprogs procps debootstrap util-linux
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# Slurm 24.11 runs from a Debian 13 root built once here, outside the repository, and reused.
SLURM_ROOT ?= /var/cache/clusterops/slurm-24.11

.PHONY: install apt slurm-root test lint demo bench dist clean

install: $(STAMP) slurm-root

# ~1 min and ~300 MB the first time (debootstrap from the mirror apt uses); nothing after that.
slurm-root: $(STAMP)
	@test -f $(SLURM_ROOT)/.clusterops-root.json || $(PY) -m clusterops sandbox build-root --path $(SLURM_ROOT)

# Debian packages: only when something is missing, so a warm machine skips apt entirely.
apt:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "make: need root to apt-get install$$missing" >&2; exit 1; fi; \
	  echo "apt-get install$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# torch is pinned and installed first: the local CPU wheel, never an unpinned (CUDA) download.
$(STAMP): pyproject.toml | apt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_PIN)
	$(PIP) install -q -e '.[train,dev,tokenizers]'
	touch $(STAMP)

test: install
	$(VENV)/bin/pytest -q $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check clusterops tests bench
	$(VENV)/bin/ruff format --check clusterops tests bench

demo: install
	$(PY) -m clusterops demo

bench: install
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

# The source distribution playbooks/roles/clusterops copies to every node.
dist: install
	$(PY) -m build --sdist --no-isolation --outdir dist .

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
