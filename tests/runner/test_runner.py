"""The runner with real papermill and real kernels on tiny notebooks (tests/data/notebooks/).

Kernel runs are few on purpose (about 2 s each): one successful run, one failing run and one leaking
run through the command line, and a two-stage pipeline against the S3 server of tests/fixtures/s3.py.
"""

from __future__ import annotations

import datetime as dt
import gc
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import nbformat
import psutil
import pytest

from condvest.errors import ParameterError
from condvest.runs import append_run
from condvest.settings import Secret, Settings
from condvest.storage import LocalStore, open_store
from runner import RESULT_MIMETYPE, RunOptions, Stage, read_index, read_records, run_notebook, run_pipeline
from runner.__main__ import main
from runner.execute import DEFAULT_CELL_TIMEOUT
from runner.notebooks import parse_value
from runner.pipelines import get_pipeline
from runner.render import plotly_file
from runner.scrub import Scrubber
from tests.fixtures.paths import TEST_DATA

NOTEBOOKS = TEST_DATA / "notebooks"
SENTINEL = "SENTINEL-pk-7f3a9c"


def _project(tmp_path: Path, *names: str) -> Path:
    """A throwaway project root (pyproject.toml + notebooks/) holding copies of the test notebooks."""
    root = tmp_path / "project"
    (root / "notebooks").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    for name in names:
        shutil.copy(NOTEBOOKS / f"{name}.ipynb", root / "notebooks" / f"{name}.ipynb")
    return root


def _cli(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **env}
    full_env.pop("CONDVEST_RUNS_URI", None)
    return subprocess.run(
        [sys.executable, "-m", "runner", *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=120
    )


# --- no kernel ------------------------------------------------------------------------------------------


def test_parse_value_like_papermill():
    assert [parse_value(v) for v in ("True", "False", "None", "7", "2.5", "2026-11-27", "all")] == [
        True,
        False,
        None,
        7,
        2.5,
        "2026-11-27",
        "all",
    ]


@pytest.mark.parametrize("name", ["api_key", "POLYGON_API_KEY", "password", "db_dsn", "token", "client_secret"])
def test_secret_named_parameter_is_refused_before_running(tmp_path, name):
    settings = Settings(runs_uri=str(tmp_path / "runs"))
    with pytest.raises(ParameterError, match="secret"):
        run_notebook(NOTEBOOKS / "ok.ipynb", {name: "x"}, settings=settings, options=RunOptions(root=tmp_path))
    assert not (tmp_path / "runs").exists()


def test_parameter_problems_are_refused_before_running(tmp_path):
    settings = Settings(runs_uri=str(tmp_path / "runs"), polygon_api_key=Secret(SENTINEL))
    with pytest.raises(ParameterError, match="does not declare it"):
        run_notebook(NOTEBOOKS / "ok.ipynb", {"nope": 1}, settings=settings, options=RunOptions(root=tmp_path))
    with pytest.raises(ParameterError, match="contains a secret"):
        run_notebook(
            NOTEBOOKS / "ok.ipynb", {"label": f"x{SENTINEL}"}, settings=settings, options=RunOptions(root=tmp_path)
        )
    with pytest.raises(ParameterError, match="credential"):
        run_notebook(
            NOTEBOOKS / "ok.ipynb",
            {"label": "https://h/v2?apiKey=abc"},
            settings=settings,
            options=RunOptions(root=tmp_path),
        )
    with pytest.raises(ParameterError, match="run_id"):
        run_notebook(NOTEBOOKS / "ok.ipynb", settings=settings, options=RunOptions(root=tmp_path, run_id="../escape"))
    with pytest.raises(ParameterError, match="no notebook"):
        run_notebook("99_missing", settings=settings, options=RunOptions(root=tmp_path))
    assert not (tmp_path / "runs").exists()


def test_scrubber_masks_secrets_query_keys_and_dsn_passwords():
    s = Scrubber([SENTINEL, "p&ssword"])
    text = f"key {SENTINEL} url ?apiKey=abc123&x=1 dsn postgresql://u:hunter2@h:5432/db html p&amp;ssword"
    assert s.text(text) == "key *** url ?apiKey=***&x=1 dsn postgresql://u:***@h:5432/db html ***"
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("x = 'apiKey=kept-in-code'")
    cell.outputs = [nbformat.v4.new_output("stream", text=f"{SENTINEL}\n")]
    nb.cells = [cell]
    clean = s.notebook(nb)
    assert clean.cells[0].source == "x = 'apiKey=kept-in-code'" and clean.cells[0].outputs[0].text == "***\n"


def test_the_scrubber_ignores_values_shorter_than_8_characters_and_says_so(caplog):
    caplog.set_level(logging.WARNING, logger="runner.scrub")
    s = Scrubber(["k", "1234567", SENTINEL])
    assert s.text("keep k and 1234567 but not " + SENTINEL) == "keep k and 1234567 but not ***"
    assert "short_secret_ignored count=2 min_length=8" in caplog.text


@pytest.mark.slow
def test_pipeline_plan_is_checked_before_any_stage_runs(tmp_path, keep_logging, capsys):
    root = _project(tmp_path, "ok")
    settings = Settings(runs_uri=str(tmp_path / "runs"))
    stages = [Stage("ok"), Stage("02_not_yet")]
    with pytest.raises(ParameterError, match=r"stage 2 \(02_not_yet\).*does not exist yet"):
        run_pipeline("t", stages=stages, settings=settings, options=RunOptions(root=root))
    with pytest.raises(ParameterError, match="no stage of pipeline t declares typo"):
        run_pipeline("t", {"typo": 1}, stages=[Stage("ok")], settings=settings, options=RunOptions(root=root))
    with pytest.raises(ParameterError, match="does not declare it"):
        run_pipeline("t", stages=[Stage("ok", {"mode": "archive"})], settings=settings, options=RunOptions(root=root))
    with pytest.raises(ParameterError, match="no pipeline 'nope'"):
        get_pipeline("nope")
    assert main(["pipeline", "daily", "--cwd", str(root), "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "01_fetch" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
    assert [s.notebook for s in get_pipeline("daily")] == ["01_fetch", "02_resample"]
    assert get_pipeline("weekly") == (
        Stage("04_retention", {"mode": "archive"}),
        Stage("04_retention", {"mode": "sync"}),
    )


def test_concurrent_index_appends_lose_nothing(tmp_path):
    store = LocalStore(tmp_path / "runs")

    def writer(w):
        for i in range(5):
            append_run(store, {"run_id": f"w{w}-{i}"})

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r["run_id"] for r in read_records(store)) == sorted(f"w{w}-{i}" for w in range(8) for i in range(5))


# --- real kernels ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_run_writes_notebook_html_and_index(tmp_path, monkeypatch):
    root = _project(tmp_path, "ok")
    monkeypatch.chdir(root)
    settings = Settings()  # runs in ./runs of the working directory
    result = run_notebook("ok", {"n": 4}, settings=settings, options=RunOptions(progress_bar=False))
    assert result.ok and result.run_id.endswith(tuple("0123456789abcdef")) and "-ok-" in result.run_id
    run_dir = root / "runs" / result.run_id
    assert sorted(p.name for p in run_dir.iterdir()) == ["ok-1.png", "ok.html", "ok.ipynb"]
    png = (run_dir / "ok-1.png").read_bytes()  # the chart as a picture, for e-mail and alerts
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(png[16:20], "big") == 1100
    # the notebook ran with the parameter, from the project root, and recorded its results
    assert result.results == {"points": 4, "label": "DEMO", "cwd": str(root)}
    nb = nbformat.read(run_dir / "ok.ipynb", as_version=4)
    assert any("n = 4" in c.source for c in nb.cells if "injected-parameters" in c.metadata.get("tags", []))
    assert any(RESULT_MIMETYPE in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
    # the html renders the plotly figure offline: plotly.js once for the runs store, referenced relatively
    page = (run_dir / "ok.html").read_text()
    assert "Plotly.newPlot" in page and f'<script src="../static/{plotly_file()}"></script>' in page
    assert len(page) < 500_000 and "plotly.js v" in (root / "runs" / "static" / plotly_file()).read_text()[:2000]
    assert not re.search(r'<script[^>]+src="(https?:)?//', page), "no script from the network (require.js, MathJax)"
    assert f"<title>ok · {result.run_id}</title>" in page
    assert result.run_id in page and "| status | ok |" in nb.cells[0].source and "code version" in nb.cells[0].source
    df = read_index(settings, expand_results=True)
    assert len(df) == 1
    row = df.iloc[0]
    assert (row.run_id, row.notebook, row.status, row.parameters) == (result.run_id, "ok.ipynb", "ok", {"n": 4})
    assert row["results.points"] == 4 and row.error is None and row.duration_s > 0
    assert row.vcpu_seconds > 0.5 and row.gb_seconds > 0.05  # the kernel's start alone (runner.usage)
    assert row.finished_at >= row.started_at and str(row.started_at.tz) == "UTC"
    assert row.html_url == str(run_dir / "ok.html")


@pytest.mark.slow
def test_chart_pngs_can_be_switched_off(tmp_path, monkeypatch):
    root = _project(tmp_path, "ok")
    monkeypatch.chdir(root)
    monkeypatch.setenv("CONDVEST_CHART_PNG", "0")
    result = run_notebook("ok", settings=Settings.from_env(), options=RunOptions(progress_bar=False))
    assert result.ok and not list((root / "runs" / result.run_id).glob("*.png"))


@pytest.mark.slow
def test_cli_failing_cell_exits_nonzero_and_names_it(tmp_path, keep_logging, capsys):
    root = _project(tmp_path, "fail_third")
    proc = _cli(["run", "fail_third", "--run-id", "r1"], cwd=root)
    assert proc.returncode == 1, proc.stderr
    line = "fail_third.ipynb failed in cell 3 (`ratio = x / divisor`): ZeroDivisionError: division by zero"
    assert line in proc.stderr
    assert proc.stdout == ""
    # the failed notebook and its html are still written, and the index says failed
    run_dir = root / "runs" / "r1"
    nb = nbformat.read(run_dir / "fail_third.ipynb", as_version=4)
    assert any(o.get("ename") == "ZeroDivisionError" for c in nb.cells for o in c.get("outputs", []))
    assert "ZeroDivisionError" in (run_dir / "fail_third.html").read_text()
    [rec] = read_records(open_store(str(root / "runs")))
    assert rec["status"] == "failed" and rec["html"] == "r1/fail_third.html"
    assert rec["error"] == {
        "cell": 3,
        "cell_index": 2,
        "source": "ratio = x / divisor",
        "ename": "ZeroDivisionError",
        "evalue": "division by zero",
        "line": "ratio = x / divisor",  # the line that raised (README fault row 46)
        "lineno": 1,
        "cell_id": rec["error"]["cell_id"],
    }
    page = (run_dir / "fail_third.html").read_text()  # the header links the failing cell
    assert f'href="#cell-id={rec["error"]["cell_id"]}"' in page and f'id="cell-id={rec["error"]["cell_id"]}"' in page
    assert main(["list", "--runs-dir", str(root / "runs")]) == 0
    out = capsys.readouterr().out
    assert "r1" in out and "failed" in out and "cell 3: ZeroDivisionError" in out
    # the same run id again is refused, nothing overwritten
    args = ["run", "fail_third", "--run-id", "r1", "--cwd", str(root), "--runs-dir", str(root / "runs")]
    assert main(args) == 2
    assert "already used" in capsys.readouterr().err
    assert len(read_records(open_store(str(root / "runs")))) == 1


@pytest.mark.slow
def test_a_cell_that_never_returns_fails_the_run_at_the_cell_timeout(tmp_path, keep_logging):
    assert RunOptions().execution_timeout == DEFAULT_CELL_TIMEOUT > 0  # every run has one unless told otherwise
    root = _project(tmp_path, "hang")
    t0 = time.monotonic()
    proc = _cli(["run", "hang", "--run-id", "h1", "--timeout", "3"], cwd=root)
    assert proc.returncode == 1, proc.stderr
    assert time.monotonic() - t0 < 60 and "hang.ipynb" in proc.stderr and "timed out" in proc.stderr.lower()
    [rec] = read_records(open_store(str(root / "runs")))
    assert rec["status"] == "failed"


@pytest.mark.slow
def test_secret_never_reaches_notebook_html_index_or_logs(tmp_path):
    root = _project(tmp_path, "leak_secret")
    dsn = f"postgresql://condvest:{SENTINEL}-pw@127.0.0.1:5432/condvest"
    proc = _cli(
        ["run", "leak_secret", "-p", "symbol", "MSFT", "--log-output", "-v"],
        cwd=root,
        POLYGON_API_KEY=SENTINEL,
        CONDVEST_PG_DSN=dsn,
    )
    assert proc.returncode == 1
    assert "RuntimeError: request for MSFT failed: https://x.example/v2?apiKey=***" in proc.stderr
    files = [p for p in (root / "runs").rglob("*") if p.is_file()]
    assert {p.suffix for p in files} >= {".ipynb", ".html", ".json"}  # the run's index record: index/<run id>.json
    for text in [proc.stdout, proc.stderr, *(p.read_text() for p in files)]:
        assert SENTINEL not in text and "OTHERKEY123" not in text and "pw-not-in-settings" not in text
    assert "key is ***" in proc.stderr  # --log-output shows the cell output, scrubbed
    [rec] = read_records(open_store(str(root / "runs")))
    assert rec["results"] == {"leak": "***", "symbol": "MSFT"} and rec["parameters"] == {"symbol": "MSFT"}
    # In [6]: the injected parameters cell counts; cell_index is the position in the source notebook
    assert rec["error"]["cell"] == 6 and rec["error"]["cell_index"] == 4


@pytest.mark.slow
def test_a_secret_fetched_at_run_time_is_scrubbed_too(tmp_path):
    from moto.server import ThreadedMotoServer

    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    moto.start()
    try:
        host, port = moto.get_host_and_port()
        aws = {
            "AWS_ENDPOINT_URL_SECRETS_MANAGER": f"http://{host}:{port}",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        import boto3

        sm = boto3.client(
            "secretsmanager",
            endpoint_url=aws["AWS_ENDPOINT_URL_SECRETS_MANAGER"],
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        name = f"polygon-runtime-{os.getpid()}-{time.monotonic_ns()}"  # moto's state is shared in the process
        arn = sm.create_secret(Name=name, SecretString=f'{{"api_key": "{SENTINEL}-arn"}}')["ARN"]
        root = _project(tmp_path, "leak_runtime_secret")
        proc = _cli(
            ["run", "leak_runtime_secret", "--log-output", "-v"], cwd=root, POLYGON_API_KEY_SECRET_ARN=arn, **aws
        )
    finally:
        moto.stop()
    assert proc.returncode == 0, proc.stderr
    assert "key fetched at run time is ***" in proc.stderr
    files = [p for p in (root / "runs").rglob("*") if p.is_file()]
    for text in [proc.stdout, proc.stderr, *(p.read_text() for p in files)]:
        assert SENTINEL not in text


@pytest.mark.slow
def test_pipeline_on_s3_runs_stages_in_order_and_stops_at_the_first_failure(tmp_path, s3_settings):
    settings = s3_settings.with_(runs_uri=f"{s3_settings.lake_uri}/runs")  # the lake's runs/ prefix
    root = _project(tmp_path, "ok", "fail_third")
    stages = [Stage("ok", {"label": "first"}), Stage("fail_third"), Stage("ok")]
    results = run_pipeline(
        "t", {"n": 2}, stages=stages, settings=settings, options=RunOptions(root=root, run_id="p1", progress_bar=False)
    )
    assert [(r.notebook, r.status, r.stage) for r in results] == [
        ("ok.ipynb", "ok", 1),
        ("fail_third.ipynb", "failed", 2),
    ]
    # the pipeline parameter went only to the stage that declares it
    assert results[0].parameters == {"label": "first", "n": 2} and results[1].parameters == {}
    store = open_store(settings.runs_uri, settings)
    keys = sorted(o.key for o in store.list(""))
    shared = f"static/{plotly_file()}"  # plotly.js once per runs store
    pngs = [r.html_key.removesuffix(".html") + "-1.png" for r in results[:1]]  # the first stage drew one chart
    cache = "png-cache/ok.json"  # which PNG each figure of the notebook's latest run has, for the next run
    runs = [k for r in results for k in (r.ipynb_key, r.html_key)]
    records = [f"index/{r.run_id}.json" for r in results]  # one record object per run, nothing shared
    browse = ["index.html", "p1/index.html"]  # every run, and the pipeline's overview
    assert keys == sorted([*records, cache, shared, *browse, *pngs, *runs])
    ages = [o.age_s for o in store.list("index/")]  # by the S3 server's clock: what tells a silent run killed
    assert len(ages) == 2 and all(a is not None and 0 <= a < 600 for a in ages)
    assert all(k.startswith("p1/") for k in keys if k not in (*records, "index.html", cache, shared))
    df = read_index(settings)
    assert list(df.status) == ["ok", "failed"] and set(df.pipeline_run_id) == {"p1"}
    assert df.html_url[0] == f"{settings.runs_uri}/{results[0].html_key}"
    first, second = (store.get(r.html_key).decode() for r in results)
    assert "Plotly.newPlot" in first and f'<script src="../../static/{plotly_file()}"></script>' in first
    # each page's header links its neighbours; a failed stage has no next one
    assert f'href="../{results[1].run_id}/fail_third.html"' in first and "first stage" in first
    assert f'href="../{results[0].run_id}/ok.html"' in second and "fail_third.html →" not in second
    assert "stage 2 of 3" in second and 'failed</strong> in <a href="#cell-id=' in second  # a link to the cell

    def writer(w):
        for i in range(3):
            append_run(store, {"run_id": f"w{w}-{i}"})

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(read_records(store)) == 2 + 12
    assert read_records(store)[0]["run_id"] == results[0].run_id  # oldest first
    assert json.loads(store.get(f"index/{results[1].run_id}.json"))["status"] == "failed"


@pytest.mark.slow
def test_cells_tagged_chart_get_their_pngs_in_page_order(tmp_path, monkeypatch):
    # the browser starts as the first tagged cell starts; every chart of the run becomes <notebook>-<k>.png
    root = _project(tmp_path, "charts")
    monkeypatch.chdir(root)
    result = run_notebook("charts", {"n": 5}, settings=Settings(), options=RunOptions(progress_bar=False))
    run_dir = root / "runs" / result.run_id
    assert result.ok and sorted(p.name for p in run_dir.glob("*.png")) == ["charts-1.png", "charts-2.png"]
    first, second = ((run_dir / f"charts-{k}.png").read_bytes() for k in (1, 2))
    assert first[:8] == second[:8] == b"\x89PNG\r\n\x1a\n" and first != second
    assert int.from_bytes(second[16:20], "big") == 1100 and int.from_bytes(second[20:24], "big") == 600
    page = (run_dir / "charts.html").read_text()
    assert page.count("Plotly.newPlot") == 2
    assert not [p for p in psutil.Process().children(recursive=True) if "chrom" in p.name()], "the browser is closed"


@pytest.mark.slow
def test_a_rerun_whose_figures_did_not_change_copies_their_pngs_without_a_browser(tmp_path, monkeypatch):
    root = _project(tmp_path, "charts")
    monkeypatch.chdir(root)
    opts = RunOptions(progress_bar=False)
    first = run_notebook("charts", {"n": 5}, settings=Settings(), options=opts)
    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "no-such-browser"))  # no browser from here on
    again = run_notebook("charts", {"n": 5}, settings=Settings(), options=opts)
    assert first.ok and again.ok
    pngs = [[(root / "runs" / r.run_id / f"charts-{k}.png").read_bytes() for k in (1, 2)] for r in (first, again)]
    assert pngs[0] == pngs[1], "the same figures: the first run's PNGs"
    # other figures need the browser: without one, the run goes on without PNGs
    other = run_notebook("charts", {"n": 6}, settings=Settings(), options=opts)
    assert other.ok and not list((root / "runs" / other.run_id).glob("*.png"))
    monkeypatch.delenv("BROWSER_PATH")
    drawn = run_notebook("charts", {"n": 6}, settings=Settings(), options=opts)
    new = [(root / "runs" / drawn.run_id / f"charts-{k}.png").read_bytes() for k in (1, 2)]
    assert new[0][:8] == b"\x89PNG\r\n\x1a\n" and new[0] != pngs[0][0] and new[1] != pngs[0][1]
    # a PNG whose run folder was removed is drawn again
    shutil.rmtree(root / "runs" / drawn.run_id)
    last = run_notebook("charts", {"n": 6}, settings=Settings(), options=opts)
    assert [(root / "runs" / last.run_id / f"charts-{k}.png").read_bytes() for k in (1, 2)] == new


@pytest.mark.slow
def test_a_pipelines_stages_share_one_browser_and_each_gets_its_own_pngs(tmp_path, monkeypatch):
    root = _project(tmp_path, "charts", "ok")
    monkeypatch.chdir(root)
    stages = [Stage("charts", {"n": 3}), Stage("ok"), Stage("charts", {"n": 6})]
    results = run_pipeline("t", stages=stages, settings=Settings(), options=RunOptions(root=root, progress_bar=False))
    assert [r.status for r in results] == ["ok"] * 3
    folders = [(root / "runs" / r.html_key).parent for r in results]
    assert [sorted(p.name for p in f.glob("*.png")) for f in folders] == [
        ["charts-1.png", "charts-2.png"],
        ["ok-1.png"],
        [
            "charts-1.png",
            "charts-2.png",
        ],
    ]
    first, third = ([(f / f"charts-{k}.png").read_bytes() for k in (1, 2)] for f in (folders[0], folders[2]))
    assert first[0] != third[0] and first[1] != third[1], "each stage's PNGs draw its own figures"
    assert not [p for p in psutil.Process().children(recursive=True) if "chrom" in p.name()], "the browser is closed"


def _kernels(of: psutil.Process | None = None) -> list[psutil.Process]:
    of = of or psutil.Process()
    return [p for p in of.children(recursive=True) if "ipykernel" in " ".join(p.cmdline())]


@pytest.mark.slow
def test_a_runner_killed_with_sigkill_leaves_a_killed_run_and_its_kernel_dies(tmp_path, keep_logging, capsys):
    """Fault row 32: the run's record and folder exist before its notebook starts, so a runner killed with SIGKILL
    is listed as killed (also beside a legacy index whose last line was torn); its kernel dies within a second or
    two, with the process its cell started (its process group: ipykernel's own parent poller would end the kernel
    alone, a second later, and leave the child running)."""
    root = _project(tmp_path, "hang_child")
    runs = root / "runs"
    runs.mkdir()
    old = {"run_id": "legacy", "notebook": "hang_child.ipynb", "status": "ok", "started_at": "2026-01-02T00:00:00Z"}
    (runs / "index.jsonl").write_text(json.dumps(old) + '\n{"run_id": "torn", "notebook": "ha')
    env = {k: v for k, v in os.environ.items() if k != "CONDVEST_RUNS_URI"}
    proc = subprocess.Popen([sys.executable, "-m", "runner", "run", "hang_child", "--run-id", "k1", "--no-progress"],
                            cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        runner, deadline = psutil.Process(proc.pid), time.monotonic() + 60
        while not ((runs / "index" / "k1.json").exists() and (kernels := _kernels(runner)) and kernels[0].children()):
            assert proc.poll() is None and time.monotonic() < deadline, "the run never started"
            time.sleep(0.1)
        started = kernels + kernels[0].children()  # the kernel and the process its cell started
        [record] = [r for r in read_records(LocalStore(runs)) if r["run_id"] == "k1"]
        assert record["status"] == "running" and record["pid"] == proc.pid
        assert (runs / "k1" / "hang_child.html").exists(), "the run folder is there before the notebook ends"
    finally:
        proc.kill()
        proc.wait()

    def ended(p: psutil.Process) -> bool:
        try:
            return p.status() == psutil.STATUS_ZOMBIE  # dead, waiting for init to collect it
        except psutil.NoSuchProcess:
            return True

    deadline = time.monotonic() + 2.0
    while not all(ended(p) for p in started) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [p for p in started if not ended(p)]
    for p in left:
        p.kill()
    assert not left, f"outlived their runner: {left}"
    assert main(["list", "--runs-dir", str(runs)]) == 0
    listed = capsys.readouterr()
    [line] = [x for x in listed.out.splitlines() if " k1 " in x]
    assert " killed " in line and f"its process {proc.pid}" in line
    assert "legacy" in listed.out and "line=2" in listed.err
    assert main(["show", "--runs-dir", str(runs), "k1"]) == 0
    assert "status:     killed" in capsys.readouterr().out


@pytest.mark.slow
def test_the_next_stages_kernel_starts_during_the_stage_before_and_is_still_fresh(tmp_path, monkeypatch, caplog):
    root = _project(tmp_path, "kernel_info")
    monkeypatch.chdir(root)
    caplog.set_level(logging.WARNING)
    stages = [Stage("kernel_info", {"pause": 3.0}), Stage("kernel_info", {"pause": 0.0})]
    first, second = run_pipeline("t", stages=stages, settings=Settings(), options=RunOptions(root=root))
    gc.collect()  # a kernel client left open says so when it is collected
    assert "zmq context" not in caplog.text and "warm kernel not used" not in caplog.text, caplog.text
    assert first.ok and second.ok
    # the second kernel came up while the first stage worked, and is a new process of its own
    assert second.results["pid"] != first.results["pid"]
    assert second.results["started"] < first.finished_at.timestamp() - 1.0
    # nothing of the warm-up is left in its namespace, and its cells count from 1 as in any run
    assert second.results["names"] == first.results["names"]
    nb = nbformat.read(root / "runs" / second.ipynb_key, as_version=4)
    assert [c.execution_count for c in nb.cells if c.cell_type == "code"][:2] == [1, 2]
    assert not _kernels(), "every kernel is stopped"


@pytest.fixture
def own_tempdir(monkeypatch) -> Iterator[Path]:
    """A temp folder of the test's own, for whatever its runs put in the temp folder (their kernels' sockets), so
    that kernels run by other processes on the machine are not looked at. Short: a Unix socket's path is limited
    to about 100 bytes."""
    path = Path(tempfile.mkdtemp(prefix="condvest-test-"))
    monkeypatch.setattr(tempfile, "tempdir", str(path))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.slow
def test_a_failed_stage_stops_the_kernel_started_for_the_next_one(tmp_path, monkeypatch, own_tempdir):
    root = _project(tmp_path, "kernel_info")
    monkeypatch.chdir(root)
    stages = [Stage("kernel_info", {"pause": 2.0, "fail": True}), Stage("kernel_info")]
    results = run_pipeline("t", stages=stages, settings=Settings(), options=RunOptions(root=root))
    assert [r.status for r in results] == ["failed"]
    assert not _kernels(), "the next stage's kernel is stopped with the pipeline"
    assert not list(own_tempdir.glob("condvest-kernel-*")), "and its sockets removed"


@pytest.mark.slow
def test_a_runs_kernel_starts_while_the_runner_prepares_and_a_refused_run_stops_it(tmp_path, monkeypatch):
    root = _project(tmp_path, "kernel_info")
    monkeypatch.chdir(root)
    # a command of its own: the runner still has papermill to import when the kernel starts
    proc = _cli(["run", "kernel_info", "-p", "pause", "0", "--no-progress"], root)
    assert proc.returncode == 0, proc.stderr
    [record] = read_records(LocalStore(root / "runs"))
    began = dt.datetime.fromisoformat(record["started_at"]).timestamp()
    assert record["results"]["started"] < began - 0.2, "the kernel was up before the run's clock started"
    assert not _kernels()
    with pytest.raises(ParameterError, match="does not declare"):
        run_notebook("kernel_info", {"nope": 1}, settings=Settings(), options=RunOptions(root=root))
    assert not _kernels(), "the refused run's kernel is stopped"
    assert [r["run_id"] for r in read_records(LocalStore(root / "runs"))] == [record["run_id"]], "nothing run"


@pytest.mark.slow
def test_a_pipeline_stopped_by_a_busy_lake_exits_75(tmp_path, monkeypatch, keep_logging, capsys):
    """As ``runner job``: a stage that finds the lake lock held fails with BusyError and the command exits 75 (a
    scheduler's "try later"), not 1. The project's 02_resample is a stand-in that only takes the lock."""
    from condvest.lake_lock import lake_lock

    root = _project(tmp_path)
    spec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": spec, "language_info": {"name": "python"}})
    params = nbformat.v4.new_code_cell("force_full_resample = False\ncompact = True")
    params.metadata["tags"] = ["parameters"]
    take = "from condvest.lake_lock import lake_lock\nfrom condvest.storage import open_store\n\n"
    take += "with lake_lock(open_store(), 'resample', run_id='stand-in'):\n    pass"
    nb.cells = [params, nbformat.v4.new_code_cell(take)]
    nbformat.write(nb, root / "notebooks" / "02_resample.ipynb")
    lake = tmp_path / "lake"
    monkeypatch.setenv("CONDVEST_LAKE_URI", str(lake))
    args = ["pipeline", "rebuild", "--cwd", str(root), "--runs-dir", str(tmp_path / "runs"), "--no-progress"]
    with lake_lock(open_store(str(lake)), "resample", run_id="the-holder"):
        assert main(args) == 75
    err = capsys.readouterr().err
    assert "BusyError" in err and "the-holder" in err
