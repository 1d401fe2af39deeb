"""How 05_monitoring's tables look: states coloured (ok / look / fail), run pages as clickable links."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import pandas as pd

#: background and text colour per state or run status
STATE_STYLES = {
    "ok": "background-color: #d8f0d8; color: #14591b",
    "look": "background-color: #fde9c8; color: #7a4a00",
    "fail": "background-color: #f8d0d0; color: #8b1111",
    "failed": "background-color: #f8d0d0; color: #8b1111",
}


def _state_style(value: object) -> str:
    return STATE_STYLES.get(str(value), "")


def page_link(url: object, label: str = "open") -> str:
    """An html link to a run page: local paths as ``file://`` URIs, http(s) as they are; ``s3://`` stays text
    (a browser cannot open it)."""
    if not isinstance(url, str) or not url:
        return ""
    if url.startswith(("http://", "https://")):
        href = url
    elif "://" in url:
        return html.escape(url)
    else:
        href = Path(url).resolve().as_uri()
    return (
        f'<a href="{html.escape(href, quote=True)}" target="_blank" title="{html.escape(url, quote=True)}">{label}</a>'
    )


def styled_states(df: pd.DataFrame, columns: tuple[str, ...] = ("state",)) -> Any:
    """``df`` with its state columns coloured (a pandas Styler; its html is what notebooks and pages show)."""
    present = [c for c in columns if c in df.columns]
    return df.style.map(_state_style, subset=present) if present else df.style


def styled_runs(df: pd.DataFrame) -> Any:
    """The run table: status coloured, ``html_url`` a clickable link to the executed notebook's page."""
    styler = styled_states(df, ("status", "last_status"))
    if "html_url" in df.columns:
        styler = styler.format({"html_url": page_link})
    return styler.hide(axis="index")
