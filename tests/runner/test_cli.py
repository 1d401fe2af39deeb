"""The runner's command line without kernels: list (newest first, filters, JSON), show, pipeline --help,
--version; the run index's records as they read (a legacy index with a torn line, killed runs)."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time

import pytest

from condvest.processes import host_name, process_started
from condvest.runs import KILLED_AFTER_S, append_run, claim_run, new_run_id, read_records, record_key
from condvest.storage import LocalStore, open_store
from runner.__main__ import main
from runner.browse import pipeline_page, runs_page, write_browse_pages
from runner.result import CellError


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
    """A lake's legacy ``index.jsonl`` (one line per run, from before record objects) keeps its history; its torn
    last line, and a torn record object, are skipped with a warning naming them."""
    store = open_store(runs)
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=10)
    legacy = {"run_id": "legacy", "notebook": "01_fetch.ipynb", "status": "ok", "started_at": old.isoformat()}
    store.put("index.jsonl", (json.dumps(legacy) + "\n").encode() + b'{"run_id": "torn", "notebook": "01_fe')
    store.put(record_key("torn-object"), b'{"run_id": "torn-object", "status": "ok", "started_')
    assert main(["list", "--runs-dir", runs]) == 0
    captured = capsys.readouterr()
    assert _ids(captured.out) == ["r3", "r2", "r1", "r0", "legacy"]
    assert "line=2" in captured.err and "skipped" in captured.err and "index/torn-object.json" in captured.err
    started = dt.datetime.now(dt.UTC).isoformat()
    append_run(store, {"run_id": "r5", "notebook": "02_resample.ipynb", "status": "ok", "started_at": started})
    assert main(["list", "--runs-dir", runs, "--json"]) == 0
    assert [r["run_id"] for r in json.loads(capsys.readouterr().out)][0] == "r5"
    assert main(["show", "--runs-dir", runs, "r5"]) == 0
    assert main(["show", "--runs-dir", runs, "legacy"]) == 0


def test_each_run_writes_only_its_own_record_object(tmp_path):
    """An append writes one object named after its run (no shared object read or rewritten); a run's final record
    replaces its running one; a run id is claimed once."""
    store = LocalStore(tmp_path / "runs")
    first = {"run_id": "a1", "notebook": "x.ipynb", "status": "running", "started_at": "2026-12-01T00:00:00+00:00"}
    assert claim_run(store, first) == "index/a1.json"
    append_run(store, {"run_id": "b2", "status": "ok", "started_at": "2026-12-01T00:00:01+00:00"})
    append_run(store, {"run_id": "b2", "attempt": 2, "status": "ok", "started_at": "2026-12-01T00:00:02+00:00"})
    before = store.head("index/b2.json").etag
    append_run(store, {**first, "status": "ok"})
    assert store.head("index/b2.json").etag == before  # another run's record untouched
    assert sorted(o.key for o in store.list("")) == ["index/a1.json", "index/b2.attempt-2.json", "index/b2.json"]
    assert [(r["run_id"], r["status"]) for r in read_records(store)] == [("a1", "ok"), ("b2", "ok"), ("b2", "ok")]
    with pytest.raises(Exception, match="already used"):
        claim_run(store, first)


def _running(run_id: str, **process: object) -> dict:
    started = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=30)
    return {"run_id": run_id, "notebook": "02_resample.ipynb", "status": "running", "parameters": {},
            "started_at": started.isoformat(), "html": f"{run_id}/02_resample.html", **process}  # fmt: skip


def test_a_running_record_whose_process_is_gone_lists_as_killed(tmp_path, capsys, keep_logging):
    runs = str(tmp_path / "runs")
    store = open_store(runs)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    here = {"host": host_name()}
    claim_run(store, _running("dead-here", **here, pid=dead.pid, pid_started=None))
    claim_run(store, _running("alive-here", **here, pid=os.getpid(), pid_started=process_started(os.getpid())))
    claim_run(store, _running("silent-elsewhere", host="elsewhere", pid=1))
    claim_run(store, _running("fresh-elsewhere", host="elsewhere", pid=1))
    then = time.time() - KILLED_AFTER_S - 5  # its heartbeat stopped longer ago than the limit
    os.utime(tmp_path / "runs" / record_key("silent-elsewhere"), (then, then))
    status = {r["run_id"]: r["status"] for r in read_records(store)}
    assert status == {"dead-here": "killed", "alive-here": "running", "silent-elsewhere": "killed",
                      "fresh-elsewhere": "running"}  # fmt: skip
    assert main(["list", "--runs-dir", runs, "--status", "killed"]) == 0
    out = capsys.readouterr().out
    assert sorted(_ids(out)) == ["dead-here", "silent-elsewhere"]
    assert f"killed: its process {dead.pid} on {host_name()} is gone" in out and "no sign of life for" in out
    assert main(["show", "--runs-dir", runs, "dead-here"]) == 0
    out = capsys.readouterr().out
    assert "status:     killed" in out and "duration:   unknown" in out and f"{runs}/dead-here/02_resample.html" in out


# --- issue 23: a browsable run store, run-id prefixes, help for people ------------------------------------------


def test_show_takes_a_unique_start_of_a_run_id_and_names_the_candidates_otherwise(runs, capsys):
    store = open_store(runs)
    for rid in ("20261207T0619-a", "20261207T0620-b"):
        append_run(store, {"run_id": rid, "notebook": "01_fetch.ipynb", "status": "ok", "started_at": "2026-12-07"})
    capsys.readouterr()
    assert main(["show", "--runs-dir", runs, "20261207T0619"]) == 0
    assert "run:        20261207T0619-a" in capsys.readouterr().out
    assert main(["show", "--runs-dir", runs, "20261207T06"]) == 2
    err = capsys.readouterr().err
    assert "starts 2 run ids (20261207T0619-a, 20261207T0620-b)" in err and "give more of it" in err
    assert main(["show", "--runs-dir", runs, "p1"]) == 0  # a pipeline run id: its stages
    assert "pipeline:   daily stage 2 (p1)" in capsys.readouterr().out


def test_runs_index_page_lists_every_run_newest_first_with_links(runs):
    records = read_records(open_store(runs))
    records[1]["error"] = CellError(4, 2, "x()", "KeyError", "k", "y = x()[0]", 3, "c").as_dict()
    page = runs_page(records)
    assert [page.index(f'href="r{i}/') for i in (3, 2, 1, 0)] == sorted(
        page.index(f'href="r{i}/') for i in (3, 2, 1, 0)
    )
    assert '<a href="r1/02_resample.html">r1</a>' in page and '<a href="r1/02_resample.ipynb">ipynb</a>' in page
    assert '<a href="p1/index.html">daily stage 2</a>' in page
    assert "cell 4, line 3 `y = x()[0]`: KeyError: k" in page and '<td class="failed">failed</td>' in page
    records[1]["html"] = "p1/r1/02_resample.html"
    overview = pipeline_page("p1", records)
    assert '<a href="r1/02_resample.html">r1</a>' in overview and 'href="../index.html"' in overview
    assert "r0" not in overview  # another run's


def test_runs_page_reads_only_the_newest_records(tmp_path, caplog, keep_logging):
    """A run rewrites ``runs/index.html`` from the newest records only: its cost does not grow with the history.
    The oldest record object is torn: reading it would log a warning naming it."""
    store = open_store(str(tmp_path / "runs"))
    start = dt.datetime(2026, 1, 5, 14, tzinfo=dt.UTC)
    ids = []
    for day in range(6):
        started = start + dt.timedelta(days=day)
        run_id = new_run_id("01_fetch", started)
        ids.append(run_id)
        append_run(
            store, {"run_id": run_id, "notebook": "01_fetch.ipynb", "status": "ok", "started_at": started.isoformat()}
        )
    store.put(record_key(ids[0]), b'{"run_id": "torn')
    with caplog.at_level("WARNING"):
        write_browse_pages(store, newest=3)
    page = store.get("index.html").decode()
    assert "6 runs; the newest 3 are listed" in page
    assert all(i in page for i in ids[3:]) and not any(i in page for i in ids[:3])
    assert "run record skipped" not in caplog.text  # the torn, oldest record was never read
    write_browse_pages(store)  # the default bound holds them all: the torn one is now read, skipped, named
    assert "run record skipped" in caplog.text and "5 runs" not in store.get("index.html").decode()


def test_help_is_user_text_with_examples(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "``" not in out and "examples:" in out and "python -m runner run 01_fetch -p date 2025-10-17" in out
    assert "exit codes:" in out and "bundle" in out
