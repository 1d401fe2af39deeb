"""The runner's command line without kernels: list (newest first, filters, JSON), show, pipeline --help,
--version."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from condvest.runs import append_run
from condvest.storage import open_store
from runner.__main__ import main


@pytest.fixture
def runs(tmp_path, keep_logging):
    store = open_store(str(tmp_path / "runs"))
    now = dt.datetime.now(dt.UTC)
    for i, (notebook, status, age_h) in enumerate(
        [("01_fetch", "ok", 72), ("02_resample", "failed", 48), ("05_monitoring", "ok", 2), ("01_fetch", "failed", 1)]
    ):
        started = now - dt.timedelta(hours=age_h)
        append_run(
            store,
            {
                "run_id": f"r{i}",
                "notebook": f"{notebook}.ipynb",
                "status": status,
                "parameters": {"n": i},
                "started_at": started.isoformat(),
                "finished_at": (started + dt.timedelta(seconds=3)).isoformat(),
                "duration_s": 3.0,
                "error": {"cell": 4, "cell_index": 2, "source": "x()", "ename": "KeyError", "evalue": "k"}
                if status == "failed"
                else None,
                "results": {"rows": i},
                "ipynb": f"r{i}/{notebook}.ipynb",
                "html": f"r{i}/{notebook}.html",
                "pipeline": "daily" if i == 1 else None,
                "pipeline_run_id": "p1" if i == 1 else None,
                "stage": 2 if i == 1 else None,
            },
        )
    return str(tmp_path / "runs")


def _ids(out: str) -> list[str]:
    return [line.split()[5] for line in out.strip().splitlines()[1:]]


def test_list_is_newest_first_and_filters(runs, capsys):
    assert main(["list", "--runs-dir", runs]) == 0
    assert _ids(capsys.readouterr().out) == ["r3", "r2", "r1", "r0"]
    main(["list", "--runs-dir", runs, "--notebook", "01_fetch"])
    assert _ids(capsys.readouterr().out) == ["r3", "r0"]
    main(["list", "--runs-dir", runs, "--status", "failed", "--since", "2d"])
    assert _ids(capsys.readouterr().out) == ["r3"]
    main(["list", "--runs-dir", runs, "--json", "-n", "2"])
    data = json.loads(capsys.readouterr().out)
    assert [r["run_id"] for r in data] == ["r3", "r2"] and data[0]["error"]["ename"] == "KeyError"
    assert main(["list", "--runs-dir", runs, "--since", "yesterday-ish"]) == 2


def test_show_prints_one_run_and_its_files(runs, capsys):
    assert main(["show", "--runs-dir", runs, "r1"]) == 0
    out = capsys.readouterr().out
    assert "status:     failed" in out and "cell 4 (`x()`): KeyError" in out and "pipeline:   daily stage 2 (p1)" in out
    assert f"{runs}/r1/02_resample.html" in out
    assert main(["show", "--runs-dir", runs, "nope"]) == 2


def test_pipeline_help_lists_pipelines_and_stages_and_version(capsys):
    with pytest.raises(SystemExit):
        main(["pipeline", "--help"])
    out = capsys.readouterr().out
    assert (
        "daily    01_fetch -> 02_resample" in out
        and "weekly   04_retention (mode=archive) -> 04_retention (mode=sync)" in out
    )
    with pytest.raises(SystemExit):
        main(["--version"])
    assert "condvest runner, code " in capsys.readouterr().out


def test_a_torn_last_line_is_skipped_with_a_warning_and_the_next_run_is_listed(runs, capsys):
    store = open_store(runs)
    store.put("index.jsonl", store.get("index.jsonl") + b'{"run_id": "torn", "notebook": "01_fe')  # killed mid-append
    assert main(["list", "--runs-dir", runs]) == 0
    captured = capsys.readouterr()
    assert _ids(captured.out) == ["r3", "r2", "r1", "r0"]
    assert "line=5" in captured.err and "skipped" in captured.err
    started = dt.datetime.now(dt.UTC).isoformat()
    append_run(store, {"run_id": "r5", "notebook": "02_resample.ipynb", "status": "ok", "started_at": started})
    assert main(["list", "--runs-dir", runs, "--json"]) == 0
    assert [r["run_id"] for r in json.loads(capsys.readouterr().out)][0] == "r5"
    assert main(["show", "--runs-dir", runs, "r5"]) == 0
