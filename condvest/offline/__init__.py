"""The offline market: deterministic synthetic bars, a Polygon-compatible local server, a DMS export.

Stands apart from the product code: the demo and the tests use it in place of Polygon and of the
legacy AWS DMS export. Submodules are imported lazily, so importing this package loads nothing heavy.

    market   SyntheticMarket: bars as a pure function of (seed, symbol, session)
    server   make_app / serve_in_thread: Polygon's REST endpoints with switchable faults (FaultPlan)
    plans    PLANS / VendorPlan: the vendor's plans the server plays (refusals, rate, DELAYED, revisions)
    dms      write_dms_export: public/raw_ohlcv/LOAD*.parquet with the real export's quirks
    world    World: the demo's market (symbols, seed, splits) as the demo recorded it, for make lab / shell / serve
    workcopy make lab's working copy lab/ of notebooks/, and the save hook that keeps sources free of outputs
    lab      make lab, make lab-sources and make shell
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__all__ = [
    "FAULT_KINDS",
    "Fault",
    "FaultPlan",
    "PLANS",
    "RequestRecord",
    "ServerHandle",
    "Split",
    "SyntheticMarket",
    "VendorPlan",
    "dms_file_specs",
    "make_app",
    "serve_in_thread",
    "start_in_thread",
    "write_dms_export",
]

_WHERE = {
    "PLANS": "plans",
    "VendorPlan": "plans",
    "SyntheticMarket": "market",
    "Split": "market",
    "write_dms_export": "dms",
    "dms_file_specs": "dms",
}


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_WHERE.get(name, 'server')}"), name)
