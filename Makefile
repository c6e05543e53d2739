# The README's two commands are `make run` and `make test`; everything starts with scripts/bootstrap.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# bpf-linker may live in /usr/local/bin or ~/.cargo/bin.
export PATH := /usr/local/bin:$(HOME)/.cargo/bin:$(PATH)

.PHONY: help bootstrap build run test check bench soak agent-soak wheel sdist clean

help:  ## show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t14

bootstrap:  ## install what is missing: Debian packages, bpf-linker, the .venv
	@scripts/bootstrap

build: bootstrap  ## build the eBPF object and the extension into .venv (maturin develop)
	@set -o pipefail; VIRTUAL_ENV=$(abspath $(VENV)) $(VENV)/bin/maturin develop --release --quiet 2>&1 \
	  | { grep -vE '^(warning: opentrace@|\S+ +(Building|Found|Built|Setting|Installed) )' || true; }

run: build  ## trace file opens live (as root); ARGS="-x -T" passes options
	@$(PY) -m opentrace $(ARGS)

test: build  ## everything CI checks: lint, types, Rust unit tests, pytest (root tests need root)
	@scripts/test

bench: build  ## overhead/start/RSS of opentrace vs bpftrace vs opensnoop (ARGS go to bench/run.py), the Python loop's cost per event, then a command's tree vs strace -f (installs the peers)
	@scripts/bootstrap bench
	@$(PY) bench/run.py $(ARGS)
	@$(PY) bench/consumer_cost.py
	@$(PY) bench/build.py

soak: build  ## trace an open storm for 10 minutes, report rate, lost and RSS over time
	@scripts/bootstrap bench
	@$(PY) bench/soak.py $(ARGS)

agent-soak: build  ## the agent (metrics + Parquet) under an open storm for 10 minutes: its RSS and CPU over time (ARGS to bench/agent_soak.py)
	@scripts/bootstrap bench
	@$(PY) bench/agent_soak.py $(ARGS)

wheel: bootstrap  ## build the release wheel (manylinux_2_28, checked by auditwheel) into dist/
	@scripts/wheel dist

sdist: bootstrap  ## the source distribution into dist/ (pip install builds it with the toolchain)
	@scripts/sdist dist

clean:  ## remove build outputs (keeps .venv)
	cargo clean; rm -rf dist
