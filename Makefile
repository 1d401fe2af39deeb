# The README's two commands: `make demo` (the daily pipeline, offline) and `make test` (the suite).
# Both create the virtual environment and install the project on first use.

PYTHON  ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed-stamp

.PHONY: demo lab lab-sources shell test test-fast lint format nbval bench clean system

# constraints.txt pins the runtime dependencies to what the image installs (tools/lock.py writes it)
$(STAMP): pyproject.toml constraints.txt
	@bash tools/ensure-system.sh
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing the project and its dependencies into $(VENV) (first run, or pyproject.toml or constraints.txt" >&2
	@echo "changed): papermill, JupyterLab, pandas, DuckDB, pyarrow, psycopg, boto3, plotly, kaleido and the test" >&2
	@echo "tools, pinned by constraints.txt. pip is quiet while it works: this takes a few minutes." >&2
	$(PY) -m pip install --quiet --disable-pip-version-check --constraint constraints.txt -e '.[test]'
	@touch $(STAMP)
	@echo "installed: $(VENV) (make removes nothing; rm -rf $(VENV) to start over)" >&2

system:
	@bash tools/ensure-system.sh

# the demo's own steps print as they go (about a minute); runs/index.html lists the pages it wrote
demo: $(STAMP)
	$(PY) -m condvest.offline.demo

# JupyterLab in the demo's world (embedded PostgreSQL and the demo's offline market unless configured), on lab/:
# an untracked working copy of notebooks/, so exploring never changes what the runner executes
lab: $(STAMP)
	$(PY) -m condvest.offline.lab

# a deliberate edit of the source notebooks: JupyterLab on notebooks/, saved without outputs
lab-sources: $(STAMP)
	$(PY) -m condvest.offline.lab --sources

# a terminal in the same world: its `python -m runner ...` reaches the demo's lake, market and PostgreSQL
shell: $(STAMP)
	$(PY) -m condvest.offline.lab --shell

# every test: the ones not marked slow on two workers (as make test-fast), then the slow ones (notebooks,
# kernels, browsers, servers, the demo) on two workers too, then nbval on the notebooks
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/cfn-lint infra/*.yaml
	$(PY) -m pytest -p no:cacheprovider -p no:nbval -m "not slow" -n 2 --dist worksteal tests
	$(PY) -m pytest -p no:cacheprovider -p no:nbval -m slow -n 2 --dist worksteal --durations=10 tests
	$(PY) -m condvest.offline.sandbox -- $(PY) -m pytest -p no:cacheprovider --nbval-lax notebooks

# the loop while working: lint and every test not marked slow (no notebook runs, browsers, crash-point child
# processes or demo), on two workers, with bytecode cached (__pycache__, ignored by git) even where the
# environment says not to: under 3 minutes on 2 cores; `make test` (what CI runs) before an issue is resolved
test-fast: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	env -u PYTHONDONTWRITEBYTECODE $(PY) -m pytest -p no:cacheprovider -p no:nbval -m "not slow" -n 2 --dist worksteal --durations=5 tests

nbval: $(STAMP)
	$(PY) -m condvest.offline.sandbox -- $(PY) -m pytest -p no:cacheprovider --nbval-lax notebooks

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/cfn-lint infra/*.yaml

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) bench/bench_fetch.py
	$(PY) bench/bench_resample.py
	$(PY) bench/bench_resample.py --root /tmp/condvest-bench-migrated --lake migrated --runner --skip pandas,polars
	$(PY) bench/bench_daily.py
	$(PY) bench/bench_s3.py --history 10
	$(PY) bench/bench_migrate.py
	$(PY) bench/bench_retention.py
	$(PY) bench/bench_adopt.py

# stop the embedded PostgreSQL before its folder goes (a removed data folder leaves a server running)
clean:
	@if [ -x $(PY) ] && [ -d .condvest ]; then $(PY) -m condvest db stop; fi
	rm -rf lake runs .condvest
