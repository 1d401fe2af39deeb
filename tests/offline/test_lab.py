"""``make lab``'s services: the embedded PostgreSQL and the offline market when nothing real is configured,
stopped afterwards when the command started them; the JupyterLab command line."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from condvest.offline.lab import jupyter_command, lab_services
from condvest.postgres import EmbeddedCluster

pytestmark = pytest.mark.slow


def test_lab_starts_what_is_missing_and_stops_what_it_started(tmp_path, monkeypatch):
    for name in ("CONDVEST_HOME", "POLYGON_API_KEY", "POLYGON_BASE_URL", "CONDVEST_RUNS_URI", "CONDVEST_AS_OF"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "pyproject.toml").write_text("")
    cluster = EmbeddedCluster(tmp_path / ".condvest")
    with lab_services(tmp_path) as env:
        assert env["CONDVEST_LAKE_URI"] == str(tmp_path / "lake")
        assert env["CONDVEST_RUNS_URI"] == str(tmp_path / "runs")
        assert cluster.running(), "the embedded PostgreSQL is started for the notebooks"
        url = f"{env['POLYGON_BASE_URL']}/v1/marketstatus/now?apiKey={env['POLYGON_API_KEY']}"
        with urllib.request.urlopen(url, timeout=10) as r:
            assert r.status == 200
        base = env["POLYGON_BASE_URL"]
    assert not cluster.running(), "a cluster the lab started is stopped with it"
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{base}/v1/marketstatus/now", timeout=3)
    # a cluster that was already running is reused and left running
    cluster.start()
    try:
        with lab_services(tmp_path):
            pass
        assert cluster.running()
    finally:
        cluster.destroy()


def test_jupyter_command_opens_the_working_copy_and_allows_root_only_as_root(tmp_path):
    cmd = jupyter_command(tmp_path, ["--ServerApp.token=x"], port=9999, browser=False)
    assert f"--ServerApp.root_dir={tmp_path / 'lab'}" in cmd and "--port=9999" in cmd and "--no-browser" in cmd
    assert ("--allow-root" in cmd) == (os.geteuid() == 0)


def test_ctrl_c_stops_jupyterlab_and_what_the_command_started(tmp_path):
    project = tmp_path / "project"
    (project / "notebooks").mkdir(parents=True)
    (project / "pyproject.toml").write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONDVEST_", "POLYGON_"))}
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "condvest.offline.lab", "--no-browser", "--port", str(port), "--",
         "--ServerApp.token=t0k", "--ServerApp.ip=127.0.0.1"],
        cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    cluster = EmbeddedCluster(project / ".condvest")
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token=t0k", timeout=2)
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "JupyterLab did not start"
                time.sleep(0.5)
        assert cluster.running()
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out[-2000:]
        assert "stopped the embedded PostgreSQL it started" in out
        assert not cluster.running()
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=3)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        cluster.destroy()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
