# Two commands on a fresh Debian machine, as root: `make demo`, `make test`.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: deps venv demo test test-quick bench bench-quick bench-scale reliability pack clean

deps:
	@scripts/install-deps

# Debian's interpreter with its site packages, so `import gfal2` works (INFRA.md).
$(STAMP): setup.py
	@test -x $(PY) || /usr/bin/python3 -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	@touch $(STAMP)

venv: deps $(STAMP)

demo: venv
	$(VENV)/bin/sbk demo

test: venv
	$(PY) -m pytest tests -q -p no:cacheprovider --durations=15

pack: venv
	$(VENV)/bin/severus pack -o severus.pyz

# Fails on a missed goal; one summary table at the end (bench/gate.py).
bench: venv
	$(PY) -m bench

# Small sizes, one repeat, every goal at half (~2 minutes): CI runs it after the tests.
bench-quick: venv
	$(PY) -m bench --quick

# A million jobs, 300,000 running, heartbeats at PanDA's rate for 10 minutes (~15 minutes; not in `bench`).
bench-scale: venv
	$(PY) -m bench.bench_scale

reliability: venv
	$(PY) -m pytest tests/reliability -q -p no:cacheprovider --reliability-full

clean:
	rm -rf $(VENV) sbk-data severus.pyz *.egg-info
