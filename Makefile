# Convenience targets; the README's two commands are the supported entry points.
PY := .venv/bin/python

.PHONY: setup test lint bench

setup:
	bash scripts/setup.sh --no-run

test:
	bash scripts/test

lint:
	.venv/bin/ruff check conformance runtime vm tests bench
	.venv/bin/mypy

# Benchmarks are run by hand (the machine is shared and noisy): each prints medians and ratios side by side.
bench:
	$(PY) bench/bench_run.py
	$(PY) bench/bench_peers.py
	$(PY) bench/bench_registry.py
	$(PY) bench/bench_net.py
	$(PY) bench/bench_vm.py
