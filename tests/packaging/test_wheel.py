"""``pip install .`` ships sql/ and the notebooks: the wheel is built from the files the Dockerfile copies,
installed into a fresh virtual environment, and used from there (away from the checkout) to deploy the
retention policy and to run a notebook through the container's entrypoint."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import psycopg
import pytest

from tests.fixtures.paths import ROOT

pytestmark = pytest.mark.slow

NOTEBOOKS = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
SQL = sorted(p.name for p in (ROOT / "sql").iterdir() if p.suffix in (".sql", ".sh"))


def _dockerfile_copies() -> list[str]:
    """The sources the Dockerfile's build stage copies (``COPY a b ./`` and ``COPY dir/ dir/``)."""
    sources: list[str] = []
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        parts = line.split()
        if parts[:1] == ["COPY"] and not any(p.startswith("--from") for p in parts):
            sources += [p.rstrip("/") for p in parts[1:-1]]
    return sources


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built (without build isolation, offline) from a copy of what the Dockerfile copies."""
    src = tmp_path_factory.mktemp("src")
    for name in _dockerfile_copies():
        if name == "constraints.txt":
            continue
        path = ROOT / name
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".ipynb_checkpoints")
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=ignore)
        else:
            shutil.copy(path, src / name)
    out = tmp_path_factory.mktemp("dist")
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    [whl] = out.glob("condvest-*.whl")
    return whl


def test_the_dockerfile_copies_what_the_wheel_needs():
    assert set(_dockerfile_copies()) >= {"pyproject.toml", "setup.py", "condvest", "runner", "notebooks", "sql"}
    assert "constraints.txt" in _dockerfile_copies()


def test_the_wheel_holds_the_packages_the_notebooks_and_sql(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"condvest/_notebooks/{n}" for n in NOTEBOOKS} <= names and len(NOTEBOOKS) == 6  # 01 .. 06
    assert {f"condvest/_sql/{n}" for n in SQL} <= names and "condvest/_sql/003_retention_procedure.sql" in names
    assert {"condvest/__init__.py", "condvest/resources.py", "runner/__main__.py", "runner/cloud/job.py"} <= names
    modules = {str(p.relative_to(ROOT)) for top in ("condvest", "runner") for p in (ROOT / top).rglob("*.py")}
    assert modules <= names, f"missing from the wheel: {sorted(modules - names)}"
    assert {"runner/static/plotly-finance.min.js", "runner/static/LICENSE.plotly.txt"} <= names  # chart PNGs
    assert "condvest/nyse_sessions.txt" in names  # the calendar without asking pandas_market_calendars
    assert not [n for n in names if n.startswith(("tests/", "bench/", "sql/", "notebooks/"))]


def test_constraints_pin_every_runtime_dependency_as_tested():
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "lock.py"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    pins = (ROOT / "constraints.txt").read_text()
    for name in ("duckdb", "papermill", "ipykernel", "boto3", "pandas", "psycopg"):
        assert re.search(rf"^{name}==\S+$", pins, re.M), name
    assert not re.search(r"^(pytest|moto|ruff|cfn-lint)==", pins, re.M)


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A fresh virtual environment holding only the wheel; its dependencies come from this environment
        through PYTHONPATH (which does not activate the checkout's editable install), their data files (nbconvert's
    templates) through JUPYTER_PATH."""
    venv = tmp_path_factory.mktemp("venv") / "v"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    r = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONDVEST_", "PYTHON"))}
    env["PYTHONPATH"] = sysconfig.get_paths()["purelib"]
    env["JUPYTER_PATH"] = str(Path(sys.prefix) / "share" / "jupyter")  # nbconvert's templates, the kernel spec
    return python, env


def test_an_installed_wheel_finds_its_sql_and_notebooks_away_from_the_checkout(installed, tmp_path):
    python, env = installed
    code = (
        "import condvest, condvest.resources as r, condvest.postgres as pg;"
        "from runner.notebooks import resolve_notebook; from pathlib import Path;"
        "print(Path(condvest.__file__).parent); print(r.SQL_DIR); print(r.NOTEBOOKS_DIR);"
        "print(','.join(f.name for f in pg.sql_files())); print(resolve_notebook('04_retention', Path('.')))"
    )
    r = subprocess.run([python, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    package, sql_dir, nb_dir, files, notebook = r.stdout.split("\n")[:5]
    assert Path(package).is_relative_to(python.parent.parent) and not Path(package).is_relative_to(ROOT)
    assert (sql_dir, nb_dir) == (f"{package}/_sql", f"{package}/_notebooks")
    assert files.split(",") == [n for n in SQL if re.fullmatch(r"\d{3}_.*\.sql", n)]
    assert notebook == f"{package}/_notebooks/04_retention.ipynb"


def test_the_retention_policy_deploys_from_the_installed_package(installed, tmp_path, pg_dsn):
    python, env = installed
    env = {**env, "CONDVEST_PG_DSN": pg_dsn.reveal(), "CONDVEST_HOME": str(tmp_path / ".condvest")}
    r = subprocess.run(
        [python, "-m", "condvest.retention", "deploy", "--target", "local", "--as-of", "2025-01-15"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    with psycopg.connect(pg_dsn.reveal()) as conn:
        procs = conn.execute("SELECT proname FROM pg_proc WHERE proname = 'archive_old_ohlcv_data'").fetchall()
        views = conn.execute("SELECT count(*) FROM pg_views WHERE viewname LIKE 'v_retention%'").fetchone()[0]
    assert procs and views > 0
    # the seed's script, as shipped inside the package, drives the same command
    [script] = python.parent.parent.glob("lib/python*/site-packages/condvest/_sql/deploy_retention_policy.sh")
    r = subprocess.run(
        ["bash", str(script), "dry-run", "--as-of", "2025-01-15"],
        cwd=tmp_path,
        env={**env, "PYTHON": str(python)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "target: CONDVEST_PG_DSN" in r.stdout


def test_the_entrypoint_runs_a_shipped_notebook_from_the_installed_package(installed, tmp_path):
    python, env = installed
    env = {**env, "CONDVEST_AS_OF": "2025-10-17"}
    r = subprocess.run(
        [python, "-m", "runner", "job", "05_monitoring", "-p", "read_postgres", "False", "--no-progress"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "job 05_monitoring ok: " in r.stdout
    [folder] = [p.parent for p in (tmp_path / "runs").glob("*/05_monitoring.html")]  # one run folder
    assert {"05_monitoring.html", "05_monitoring.ipynb"} <= {p.name for p in folder.iterdir()}
    r = subprocess.run(
        [python, "-m", "runner", "job", "nope"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 2 and "_notebooks/nope.ipynb" in r.stderr
