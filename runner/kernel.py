"""The kernel manager of runner runs: Unix sockets of its own on POSIX (no TCP port to collide with a parallel
run's), transport encryption (CurveZMQ keys provisioned by the manager)
where the kernelspec declares support and pyzmq has it, so kernels neither talk in plain text over TCP nor
print ipykernel's "Kernel is running over TCP without encryption" warning on every run.

An ipykernel kernel is started by ``KERNEL_LAUNCH`` instead of ``-m ipykernel_launcher``: the same launch,
after ``skip_iri_grammar()``. Displaying a plotly figure imports nbformat, hence jsonschema, whose import
builds the Earley parsers of ``rfc3987_syntax`` (installed with JupyterLab's ``jupyter-events``) when that
package is there: about 1.4 s on every run that draws a chart, for an ``iri`` format check that neither
nbformat nor our code uses. The runner's own process skips it the same way (``runner.execute``).
"""

from __future__ import annotations

import os
import sys
import tempfile
import uuid

import zmq
from jupyter_client.manager import AsyncKernelManager
from traitlets import CaselessStrEnum, default

#: what ``python -m ipykernel_launcher`` does, after ``skip_iri_grammar()``
KERNEL_LAUNCH = (
    "import sys\n"
    "sys.modules.setdefault('rfc3987_syntax', None)\n"
    "if sys.path and sys.path[0] == '':\n"
    "    del sys.path[0]\n"
    "from ipykernel import kernelapp\n"
    "kernelapp.launch_new_instance()\n"
)


def skip_iri_grammar() -> None:
    """Make ``import rfc3987_syntax`` fail in this process (jsonschema then leaves the ``iri`` and
    ``iri-reference`` formats unchecked, as it does where the package is not installed). No effect once
    the package was imported."""
    sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]


class RunKernelManager(AsyncKernelManager):
    """``AsyncKernelManager`` (nbclient's default) with ``transport_encryption="auto"`` when CurveZMQ exists,
    starting ipykernel through ``KERNEL_LAUNCH``."""

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
            cmd[1:3] = ["-c", KERNEL_LAUNCH]
        return cmd
