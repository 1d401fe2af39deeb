"""The runner's kernels: kernels started at once by parallel runs (the shards of a sharded run) never share a
socket, and leave none behind; a kernel ends only through the runner's watchdog, which takes its cells' processes
with it."""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import tempfile
from collections.abc import AsyncIterator
from typing import Any

import pytest

from runner.kernel import RunKernelManager

pytestmark = pytest.mark.slow  # starts Jupyter kernels


@contextlib.asynccontextmanager
async def _ready_kernel() -> AsyncIterator[tuple[RunKernelManager, Any]]:
    """A runner kernel and its client, ready; shut down afterwards."""
    km = RunKernelManager(kernel_name="python3")
    await km.start_kernel()
    kc = km.client()
    kc.start_channels()
    try:
        await kc.wait_for_ready(timeout=60)
        yield km, kc
    finally:
        kc.stop_channels()
        await km.shutdown_kernel(now=True)


@pytest.mark.skipif(os.name != "posix", reason="Unix sockets")
def test_kernels_started_at_once_get_sockets_of_their_own_and_leave_none(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # jupyter_client's own default would put one shared "kernel-ipc" name here

    async def one() -> str:
        async with _ready_kernel() as (km, _):
            assert km.transport == "ipc"
            return km.ip

    async def many() -> list[str]:
        return await asyncio.gather(*[one() for _ in range(3)])

    ips = asyncio.run(many())
    assert len(set(ips)) == 3 and all(ip.startswith(tempfile.gettempdir()) for ip in ips)
    assert not [p for ip in ips for p in glob.glob(ip + "*")]  # every socket removed
    assert not list(tmp_path.iterdir())


def test_only_the_runners_watchdog_ends_a_kernel_whose_runner_died(tmp_path, monkeypatch):
    """ipykernel's own parent poller would end the kernel alone (``os._exit``) and leave what its cells started
    running; when it noticed the runner's death before the watchdog did (about one time in ten, more under load),
    ``test_a_runner_killed_with_sigkill_leaves_a_killed_run_and_its_kernel_dies`` found the cell's child alive."""
    monkeypatch.chdir(tmp_path)
    code = "import threading; print(sorted(f'{type(t).__name__}:{t.name}' for t in threading.enumerate()))"

    async def threads() -> str:
        async with _ready_kernel() as (_, kc):
            out: list[str] = []
            reply = await kc.execute_interactive(
                code, timeout=60, output_hook=lambda m: out.append(m["content"].get("text", ""))
            )
            assert reply["content"]["status"] == "ok"
            return "".join(out)

    listed = asyncio.run(threads())
    assert "condvest-runner-watch" in listed, listed
    assert "ParentPoller" not in listed, listed
