"""The papermill engine of runner runs: papermill's nbclient client, in a kernel that the runner owns.

nbclient stops a kernel it started itself and leaves alone one it was handed (``NotebookClient(km=...)``,
``owns_km``): it neither closes its client nor stops that kernel. The runner hands every run's kernel manager
over (``km``: a kernel started ahead, or a manager whose kernel nbclient starts), so this engine closes the
client and stops the kernel itself when the notebook is done, at once (no graceful shutdown round trip): the
outputs are in, and our notebooks release what they hold (lake lock, DuckDB connections) in their cells, not in
atexit hooks. While the cells run the kernel is marked ``executing``, so that a stopped job interrupts it (its
cell fails with ``KeyboardInterrupt``, the notebook's clean-up runs) instead of killing it. papermill registers
it under ``runner.kernel.ENGINE_NAME`` from the ``papermill.engine`` entry point
(pyproject.toml) as papermill is imported; importing this module imports papermill.
"""

from __future__ import annotations

import logging
from typing import Any

from papermill.clientwrap import PapermillNotebookClient
from papermill.engines import Engine

from runner.kernel import RunKernelManager, executing, shutdown_now

log = logging.getLogger(__name__)


class RunnerEngine(Engine):
    """papermill's nbclient engine with a kernel manager of the runner's (``km``, ``None``: a new
    ``RunKernelManager``), whose client and kernel it closes in its own ``finally``."""

    @classmethod
    def execute_managed_notebook(  # type: ignore[override]
        cls,
        nb_man: Any,
        kernel_name: str,
        *,
        km: RunKernelManager | None = None,
        log_output: bool = False,
        start_timeout: float = 60,
        execution_timeout: float | None = None,
        input_path: str | None = None,  # papermill passes it; nbclient has no such option
        **kwargs: Any,
    ) -> Any:
        km = RunKernelManager(kernel_name=kernel_name) if km is None else km
        client = PapermillNotebookClient(
            nb_man,
            km=km,
            kernel_name=kernel_name,
            timeout=execution_timeout or None,  # papermill's own engine too: 0 or None is no limit
            startup_timeout=start_timeout,
            log=logging.getLogger("papermill"),
            log_output=log_output,
            **kwargs,
        )
        try:
            with executing(km):  # a SIGTERM of the job interrupts it (runner.kernel.interrupt_executing)
                return client.execute()
        finally:
            close_kernel(client, km)


def close_kernel(client: PapermillNotebookClient, km: RunKernelManager) -> None:
    """Stop ``km``'s kernel at once (its connection file and sockets removed) and close ``client``'s channels."""
    try:
        if km.has_kernel:
            shutdown_now(km)
    finally:
        if client.kc is not None:
            client.kc.stop_channels()
            client.kc = None
