"""``python -m condvest db start|stop|status`` and ``make clean``: the embedded cluster is managed by name,
and never left running behind a removed folder."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys

import pytest

from condvest.db_cli import embedded_pid_file, left_running_note
from condvest.postgres import EmbeddedCluster
from condvest.settings import Settings
from tests.fixtures.paths import ROOT

pytestmark = pytest.mark.slow


def _db(project, action):
    env = {k: v for k, v in os.environ.items() if k not in ("CONDVEST_HOME", "CONDVEST_PG_DSN")}
    r = subprocess.run(
        [sys.executable, "-m", "condvest", "db", action],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    return r.stdout


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_db_start_status_stop_and_make_clean(tmp_path):
    project = tmp_path / "project"
    (project / ".condvest").mkdir(parents=True)  # the marker: the root is here, whatever the cwd below it
    (project / "notebooks").mkdir()
    cluster_dir = EmbeddedCluster(project / ".condvest").dir  # under /tmp when the postgres user cannot enter
    try:
        _lifecycle(project)
    finally:
        shutil.rmtree(cluster_dir, ignore_errors=True)


def _lifecycle(project):
    assert "not created yet" in _db(project / "notebooks", "status")
    out = _db(project / "notebooks", "start")
    assert "started on 127.0.0.1:" in out and "python -m condvest db stop" in out
    port = int(out.split("127.0.0.1:")[1].split()[0])
    assert _port_open(port)
    assert f"running on 127.0.0.1:{port}" in _db(project, "status")
    assert "already running" in _db(project, "start")
    assert "password" not in out.lower()
    # a runner command that started it says so on stderr, with the stop command (README fault row 47)
    settings = Settings(home=project / ".condvest")
    assert embedded_pid_file(settings)
    note = left_running_note(settings, was_running=False)
    assert note and f"still running on 127.0.0.1:{port}" in note and note.endswith("python -m condvest db stop")
    assert left_running_note(settings, was_running=True) is None  # running before the command: not its doing
    assert "stopped" in _db(project, "stop") and not _port_open(port)
    assert left_running_note(settings, was_running=False) is None and not embedded_pid_file(settings)
    assert "stopped" in _db(project, "status")
    # make clean stops a running cluster before it removes .condvest/
    _db(project, "start")
    assert _port_open(port)
    r = subprocess.run(
        ["make", "-f", str(ROOT / "Makefile"), "clean", f"VENV={ROOT / '.venv'}"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert not (project / ".condvest").exists() and not _port_open(port)
