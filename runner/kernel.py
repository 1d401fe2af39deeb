"""The kernel manager of runner runs: transport encryption (CurveZMQ keys provisioned by the manager)
where the kernelspec declares support and pyzmq has it, so kernels neither talk in plain text over TCP nor
print ipykernel's "Kernel is running over TCP without encryption" warning on every run."""

from __future__ import annotations

import zmq
from jupyter_client.manager import AsyncKernelManager
from traitlets import CaselessStrEnum, default


class RunKernelManager(AsyncKernelManager):
    """``AsyncKernelManager`` (nbclient's default) with ``transport_encryption="auto"`` when CurveZMQ exists."""

    transport_encryption = CaselessStrEnum(["disabled", "auto", "required"], config=True)

    @default("transport_encryption")
    def _transport_encryption_default(self) -> str:
        return "auto" if zmq.has("curve") else "disabled"
