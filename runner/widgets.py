"""Outputs that only a live kernel can draw, turned into what a run page can show truthfully.

A tqdm bar in a kernel is an ipywidgets view (``HBox(HTML, FloatProgress, HTML)``); the executed notebook keeps
its first frame as the output's text (``0%| 0/30``, read as "nothing was done") and the bar's final state in the
notebook's widget metadata. A page drawn without the widget manager would show that first frame, or a raw
``FloatProgress(...)`` repr for a bare progress widget (DuckDB's own query bar). ``settle_widgets`` gives each
tqdm bar its final state as text (``desc: 100% ██████████ 6/6 [00:13<00:00, ...]``), drops a bar its code hid
at the end (``leave=False``) and every other widget view, and drops the widget metadata; a terminal-style bar
in a stream output (carriage returns between frames) keeps its last frame.
"""

from __future__ import annotations

import copy
import html
from typing import Any

__all__ = ["WIDGET_STATE_MIMETYPE", "WIDGET_VIEW_MIMETYPE", "bar_text", "last_frames", "settle_widgets"]

WIDGET_VIEW_MIMETYPE = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE_MIMETYPE = "application/vnd.jupyter.widget-state+json"
_PROGRESS_MODELS = ("FloatProgressModel", "IntProgressModel")
_BLOCKS = " ▏▎▍▌▋▊▉█"
_BAR_WIDTH = 10


def _ref(value: Any) -> str:
    return str(value).removeprefix("IPY_MODEL_")


def _plain(value: Any) -> str:
    """An HTML widget's value as text (tqdm writes figure spaces and escapes ``<``)."""
    return html.unescape(str(value or "")).replace("\u2007", " ")


def bar_text(value: float, total: float, width: int = _BAR_WIDTH) -> str:
    """tqdm's bar of ``width`` cells for ``value`` of ``total`` (``█████▌    ``)."""
    frac = 0.0 if total <= 0 else min(max(value / total, 0.0), 1.0)
    eighths = round(frac * width * 8)
    full, part = divmod(eighths, 8)
    bar = "█" * full + (_BLOCKS[part] if part and full < width else "")
    return bar.ljust(width)


def _hidden(states: dict[str, Any], model: dict[str, Any]) -> bool:
    layout = states.get(_ref(model.get("layout", "")), {}).get("state", {})
    return layout.get("visibility") == "hidden" or layout.get("display") == "none"


def _tqdm_text(states: dict[str, Any], model_id: str) -> str | None:
    """The final text of a tqdm bar's HBox, or ``None`` when ``model_id`` is not one (or it is hidden)."""
    box = states.get(model_id, {})
    state = box.get("state", {})
    if box.get("model_name") != "HBoxModel" or _hidden(states, state):
        return None
    children = [states.get(_ref(c), {}) for c in state.get("children", [])]
    names = [c.get("model_name") for c in children]
    if len(children) != 3 or names[0] != "HTMLModel" or names[1] not in _PROGRESS_MODELS or names[2] != "HTMLModel":
        return None
    left, bar, right = (c.get("state", {}) for c in children)
    try:
        drawn = bar_text(float(bar.get("value") or 0), float(bar.get("max") or 0))
    except (TypeError, ValueError):
        return None
    # no '|' around the bar: the page shows a finished bar, never tqdm's frozen first frame (``0%|``)
    return f"{_plain(left.get('value')).strip()} {drawn} {_plain(right.get('value')).strip()}".strip()


def last_frames(text: str) -> str:
    """Terminal output with each line's carriage-return frames reduced to the last one."""
    if "\r" not in text:
        return text
    lines = []
    for line in text.split("\n"):
        frames = [f for f in line.split("\r") if f]
        lines.append(frames[-1] if frames else "")
    return "\n".join(lines)


def settle_widgets(nb: Any) -> Any:
    """A copy of an executed notebook whose widget outputs are their final text, or gone (see the module)."""
    nb = copy.deepcopy(nb)
    meta = nb.metadata.pop("widgets", None) or {}
    states = (meta.get(WIDGET_STATE_MIMETYPE) or {}).get("state") or {}
    for cell in nb.cells:
        if "outputs" not in cell:
            continue
        kept = []
        for out in cell.outputs:
            data = out.get("data") or {}
            if WIDGET_VIEW_MIMETYPE in data:
                text = _tqdm_text(states, str((data[WIDGET_VIEW_MIMETYPE] or {}).get("model_id", "")))
                if text is None:
                    continue  # a widget a page cannot draw, or a bar hidden at its end: not shown at all
                out = copy.deepcopy(out)
                out["data"] = {"text/plain": text}
            elif out.get("output_type") == "stream" and "\r" in str(out.get("text", "")):
                out = copy.deepcopy(out)
                out["text"] = last_frames(str(out["text"]))
            kept.append(out)
        cell.outputs = kept
    return nb
