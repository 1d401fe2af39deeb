"""What a run used (runner.usage): vCPU-seconds and GB-seconds of the run's process tree, in its record and the
daily report, the figures BENCHMARKS.md prices."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

from condvest.runs import read_records
from condvest.storage import LocalStore
from runner.cloud.alerts import build_report, report_text
from runner.context import StageContext
from runner.images import ChartBrowser, PngCache
from runner.publish import ChartPngs, RunFolder, publish
from runner.result import Execution
from runner.scrub import Scrubber
from runner.usage import UsageMeter

# a child that holds ~300 MB and keeps one CPU busy for 0.5 s of its own CPU time (however loaded the machine is)
_BUSY = """
import time
block = bytearray(300 * 10**6)
for i in range(0, len(block), 4096):
    block[i] = 1
while time.process_time() < 0.5:
    pass
"""


def _busy_child() -> None:
    subprocess.run([sys.executable, "-c", _BUSY], check=True)


def test_the_meter_counts_a_child_process_cpu_and_memory():
    meter = UsageMeter.start(interval=0.05)
    _busy_child()
    usage = meter.stop()
    assert usage.vcpu_seconds >= 0.5  # the child's half CPU second, seen through the tree
    assert usage.peak_rss_gb >= 0.3  # its 300 MB on top of this process
    assert usage.gb_seconds >= usage.peak_rss_gb * usage.wall_s * 0.999 and usage.wall_s >= 0.5
    assert meter.stop() == usage  # stopped once: the same figures again


def test_the_run_record_and_the_daily_report_carry_vcpu_and_gb_seconds(tmp_path):
    store = LocalStore(tmp_path)
    meter = UsageMeter.start(interval=0.05)
    started = dt.datetime.now(dt.UTC)
    _busy_child()  # the run's work, in a child process as a kernel is
    execution = Execution(None, started, dt.datetime.now(dt.UTC))
    run = RunFolder(store, "r1", "02_resample.ipynb", "p")
    pngs = ChartPngs(False, ChartBrowser(), PngCache(store, "02_resample"))
    context = StageContext(pipeline="daily", pipeline_run_id="p", stage=1, stages=1)
    result = publish(execution, run, {}, scrubber=Scrubber([]), context=context, pngs=pngs, root=tmp_path, usage=meter)
    (record,) = read_records(store)
    assert record["run_id"] == "r1" and record["vcpu_seconds"] >= 0.5 and record["gb_seconds"] >= 0.15
    assert (result.vcpu_seconds, result.gb_seconds) == (record["vcpu_seconds"], record["gb_seconds"])
    report = build_report("daily", "p", [record, {**record, "run_id": "r2", "stage": 2}])
    assert report.usage == {"vcpu_seconds": 2 * record["vcpu_seconds"], "gb_seconds": 2 * record["gb_seconds"]}
    _, text = report_text(report, "runs/p/")
    assert "resources used" in text and '"vcpu_seconds": ' in text
