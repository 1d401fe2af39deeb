"""The kernel manager of runner runs: Unix sockets of its own on POSIX (no TCP port to collide with a parallel
run's), transport encryption (CurveZMQ keys provisioned by the manager)
where the kernelspec declares support and pyzmq has it, so kernels neither talk in plain text over TCP nor
print ipykernel's "Kernel is running over TCP without encryption" warning on every run.

An ipykernel kernel is started by ``KERNEL_LAUNCH`` instead of ``-m ipykernel_launcher``: the same launch,
after ``skip_iri_grammar()``. Displaying a plotly figure imports nbformat, hence jsonschema, whose import
builds the Earley parsers of ``rfc3987_syntax`` (installed with JupyterLab's ``jupyter-events``) when that
package is there: a cost on every run that draws a chart (BENCHMARKS.md has the figure), for an ``iri`` format
check that neither nbformat nor our code uses. The runner's own process skips it the same way
(``runner.execute``).
"""

from __future__ import annotations

import ast
import asyncio
import json
import logging
import os
import signal
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import zmq
from jupyter_client.manager import AsyncKernelManager
from traitlets import CaselessStrEnum, default

from runner.images import draws_chart

log = logging.getLogger(__name__)

#: papermill's ``engine_name`` of runner runs: ``runner.engine.RunnerEngine``, which runs a notebook in a
#: ``RunKernelManager``'s kernel (registered through the ``papermill.engine`` entry point in pyproject.toml)
ENGINE_NAME = "condvest"

#: the kernel dies with the runner: a daemon thread of the kernel checks every ``WATCH_S`` seconds that its parent is
#: still the runner that started it (``{parent}``: its pid); once the runner is gone (SIGKILL included: nothing of
#: the runner runs then) the kernel kills its own process group (itself and whatever its cells started; jupyter_client
#: starts it in a session of its own) or, when it leads none, itself. A thread, not ``PR_SET_PDEATHSIG``: that
#: signal follows the *thread* that started the kernel, and a warm kernel is started by a thread that ends at once.
WATCH_S = 0.2
_WATCHDOG = (
    "import os, signal, threading, time\n"
    "def __condvest_watch(parent):\n"
    "    while os.getppid() == parent:\n"
    "        time.sleep({watch_s})\n"
    "    group = os.getpgid(0)\n"
    "    os.killpg(group, signal.SIGKILL) if group == os.getpid() else os.kill(os.getpid(), signal.SIGKILL)\n"
    "threading.Thread(target=__condvest_watch, args=({parent},), name='condvest-runner-watch', daemon=True).start()\n"
    "del __condvest_watch\n"
)

#: what ``python -m ipykernel_launcher`` does, after ``skip_iri_grammar()``; ``kernel_launch`` adds the watchdog
KERNEL_LAUNCH = (
    "import sys\n"
    "sys.modules.setdefault('rfc3987_syntax', None)\n"
    "if sys.path and sys.path[0] == '':\n"
    "    del sys.path[0]\n"
    "from ipykernel import kernelapp\n"
    "kernelapp.launch_new_instance()\n"
)


def kernel_launch(parent: int) -> str:
    """``KERNEL_LAUNCH`` for a kernel that dies with process ``parent`` (the runner) within ``WATCH_S`` seconds."""
    return _WATCHDOG.format(parent=int(parent), watch_s=WATCH_S) + KERNEL_LAUNCH


def skip_iri_grammar() -> None:
    """Make ``import rfc3987_syntax`` fail in this process (jsonschema then leaves the ``iri`` and
    ``iri-reference`` formats unchecked, as it does where the package is not installed). No effect once
    the package was imported."""
    sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]


class RunKernelManager(AsyncKernelManager):
    """``AsyncKernelManager`` (nbclient's default) with ``transport_encryption="auto"`` when CurveZMQ exists,
    starting ipykernel through ``kernel_launch``: in its own process group (jupyter_client's), and dying with this
    process (``WATCH_S``), with the processes its cells started (ipykernel's own parent poller is off)."""

    transport_encryption = CaselessStrEnum(["disabled", "auto", "required"], config=True)

    @default("transport")
    def _transport_default(self) -> str:
        # Unix sockets named after the kernel's connection file: kernels started at once by parallel runs (the
        # shards of a sharded run) cannot pick the same TCP port ("Address already in use": jupyter_client
        # chooses free ports before the kernel binds them)
        return "ipc" if os.name == "posix" else "tcp"

    @default("ip")
    def _ip_default(self) -> str:
        # jupyter_client's default ipc name is "kernel-ipc" in the working directory, shared by every kernel
        # started there: a name of this kernel's own (its five sockets are removed when it shuts down)
        if self.transport == "ipc":
            return os.path.join(tempfile.gettempdir(), f"condvest-kernel-{uuid.uuid4().hex}")
        return "127.0.0.1"

    @default("transport_encryption")
    def _transport_encryption_default(self) -> str:
        return "auto" if zmq.has("curve") else "disabled"

    def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
        cmd: list[str] = super().format_kernel_cmd(extra_arguments)
        if cmd[1:3] == ["-m", "ipykernel_launcher"]:
            cmd[1:3] = ["-c", kernel_launch(os.getpid())]
            # ipykernel's own parent poller (every second; it ends the kernel alone with ``os._exit``) raced the
            # watchdog, and when it noticed first the processes the kernel's cells started outlived the runner:
            # parent 1 turns it off (ipykernel never polls for init) without the banner a parent of 0 prints
            cmd.append("--IPKernelApp.parent_handle=1")
        return cmd


def _source(cell: Any) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src  # a notebook file's JSON may hold a list of lines


def notebook_imports(nb: Any) -> list[str]:
    """The modules a notebook's code cells (a ``NotebookNode`` or the file's JSON) import at top level, in order,
    without repeats (``from a import b`` gives ``a`` and ``a.b``: ``b`` may be a submodule); relative imports and
    unparsable cells are skipped."""
    out: dict[str, None] = {}
    for cell in nb["cells"]:
        if cell.get("cell_type") != "code":
            continue
        try:
            tree = ast.parse(_source(cell))
        except SyntaxError:  # IPython magics: not Python
            continue
        for node in tree.body:
            if isinstance(node, ast.Import):
                out.update(dict.fromkeys(a.name for a in node.names))
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                out[node.module] = None
                out.update(dict.fromkeys(f"{node.module}.{a.name}" for a in node.names if a.name != "*"))
    return list(out)


def imports_anything(cell: Any) -> bool:
    """Whether a code cell imports a module at top level."""
    try:
        tree = ast.parse(_source(cell))
    except SyntaxError:
        return False
    return any(isinstance(n, ast.Import | ast.ImportFrom) for n in tree.body)


#: what drawing a plotly chart in a kernel imports besides the notebook's own imports (the display goes through
#: nbformat): a notebook with a cell tagged ``chart`` gets them in its warm-up
CHART_MODULES = ("plotly.graph_objects", "plotly.subplots", "plotly.io", "nbformat")

_WARM_UP = """def __condvest_warm_up():
    import importlib
    for name in {modules!r}:
        try:
            importlib.import_module(name)
        except Exception:
            pass
__condvest_warm_up()
del __condvest_warm_up
"""
#: a chart notebook's warm-up also draws a throwaway figure of the finance trace types, subplots and an
#: annotation, and makes its display bundle: plotly loads each trace type's validators, the default template
#: and its JSON encoder on first use, which the chart cell otherwise pays for (BENCHMARKS.md, third round of the
#: daily pipeline). Nothing is displayed or kept.
_CHART_WARM_UP = """def __condvest_chart_warm_up():
    try:
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        fig = make_subplots(rows=2, cols=1, subplot_titles=["a", "b"], shared_xaxes=True)
        fig.add_trace(go.Candlestick(x=[0], open=[1], high=[1], low=[1], close=[1]), row=1, col=1)
        fig.add_trace(go.Scatter(x=[0], y=[1]), row=2, col=1)
        fig.add_trace(go.Bar(x=[0], y=[1]), row=2, col=1)
        fig.add_annotation(x=0, y=1, text="a", row=1, col=1)
        fig.update_xaxes(rangeslider_visible=False, row=1, col=1)
        fig.update_layout(height=300, title="a")
        fig._repr_mimebundle_()
    except Exception:
        pass
__condvest_chart_warm_up()
del __condvest_chart_warm_up
"""


class WarmKernel:
    """The kernel of a pipeline's next stage, started while the current stage runs, with the next notebook's
    modules already imported (its kernel start and imports then overlap the current stage's work instead of
    following it). Still a fresh kernel per stage: nothing of the notebook runs before its own cells.

    ``start()`` returns at once (a thread starts the kernel); ``take()`` waits for it and hands over the kernel
    manager, which the run gives papermill as ``km`` (``runner.engine``; ``None`` when the kernel did not come
    up: the stage then starts its own, as without this); a kernel not taken is shut down by ``discard()``."""

    def __init__(
        self, kernel_name: str, cwd: Path, modules: list[str], *, charts: bool = False, timeout_s: float = 120.0
    ) -> None:
        self.kernel_name, self.cwd, self.modules, self.timeout_s = kernel_name, cwd, modules, timeout_s
        self.charts = charts  # draw a throwaway chart too (_CHART_WARM_UP)
        self._thread: threading.Thread | None = None
        self._km: RunKernelManager | None = None
        self._error: BaseException | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._main, name="condvest-warm-kernel", daemon=True)
            self._thread.start()

    def _main(self) -> None:
        try:
            asyncio.run(self._start())
        except BaseException as exc:  # noqa: BLE001  the stage starts its own kernel; take() says why
            self._error = exc

    async def _start(self) -> None:
        km = RunKernelManager(kernel_name=self.kernel_name)
        await km.start_kernel(cwd=str(self.cwd))
        self._km = km  # from here on discard() shuts it down, whatever happens below
        kc = km.client()
        kc.start_channels()
        try:
            await kc.wait_for_ready(timeout=self.timeout_s)
            code = _WARM_UP.format(modules=self.modules) + (_CHART_WARM_UP if self.charts else "")
            msg_id = kc.execute(code, silent=True, store_history=False)
            while True:  # the reply to the warm-up; its iopub messages are this client's and go with it
                reply = await kc.get_shell_msg(timeout=self.timeout_s)
                if reply["parent_header"].get("msg_id") == msg_id:
                    break
        finally:
            kc.stop_channels()

    def take(self) -> RunKernelManager | None:
        """The started kernel's manager (the caller shuts the kernel down), or ``None`` with the reason logged."""
        if self._thread is None:
            return None
        self._thread.join(timeout=self.timeout_s)
        if self._thread.is_alive() or self._error is not None or self._km is None:
            why = "still starting" if self._thread.is_alive() else f"{type(self._error).__name__}: {self._error}"
            log.warning("warm kernel not used reason=%r", why[:300])
            self.discard()
            return None
        km, self._km = self._km, None
        return km

    @classmethod
    def for_notebook(cls, path: Path, cwd: Path) -> WarmKernel:
        """The kernel ``path`` asks for (its kernelspec; ``python3`` when it names none), with its imports."""
        nb = json.loads(path.read_text(encoding="utf-8"))
        name = (nb.get("metadata", {}).get("kernelspec") or {}).get("name") or "python3"
        charts = any(draws_chart(c) for c in nb["cells"])  # plotly (imported inside our chart functions) too
        return cls(name, cwd, notebook_imports(nb) + (list(CHART_MODULES) if charts else []), charts=charts)

    def discard(self) -> None:
        """Shut the kernel down when it was not taken (waits for a start in progress)."""
        if self._thread is not None:
            self._thread.join(timeout=self.timeout_s)
        km, self._km = self._km, None
        if km is not None:
            shutdown_now(km)


def shutdown_now(km: AsyncKernelManager) -> None:
    """Stop a kernel at once and remove its connection file and sockets (from any thread without a running loop)."""
    try:
        asyncio.run(km.shutdown_kernel(now=True))
    except Exception as exc:  # noqa: BLE001  a kernel that is gone already
        log.debug("kernel shutdown error=%s", type(exc).__name__)


#: the kernel managers whose kernels run a notebook's cells now (``executing``); ``interrupt_executing`` reaches them
_EXECUTING: set[AsyncKernelManager] = set()


@contextmanager
def executing(km: AsyncKernelManager) -> Iterator[None]:
    """Mark ``km``'s kernel as running a notebook while the block runs (``runner.engine``)."""
    _EXECUTING.add(km)
    try:
        yield
    finally:
        _EXECUTING.discard(km)


def interrupt_executing() -> int:
    """Interrupt (SIGINT, as Jupyter's "interrupt kernel") every kernel running a notebook in this process, so
    that the running cell raises ``KeyboardInterrupt`` and the notebook's own clean-up runs (``with`` blocks exit:
    the lake lock is released, DuckDB closes); the run then fails at that cell and is recorded as usual. Returns
    how many kernels were interrupted (0: none is running cells). Safe in a signal handler: it awaits nothing
    (the provisioner's ``send_signal`` only signals the kernel's process group)."""
    count = 0
    for km in list(_EXECUTING):
        provisioner = km.provisioner
        if provisioner is None or not km.has_kernel:
            continue
        step = provisioner.send_signal(signal.SIGINT)
        try:
            step.send(None)  # the coroutine signals and returns without suspending
        except StopIteration:
            count += 1
        except OSError as exc:  # the kernel is gone already
            log.debug("kernel interrupt error=%s", type(exc).__name__)
        else:
            step.close()
    return count
