"""Progress bars: shown inside a Jupyter kernel (tqdm's automatic mode would hide them there)."""

from __future__ import annotations

import subprocess
import sys


def _disable(prelude: str) -> str:
    code = f"{prelude}from condvest.display import progress_disable; print(progress_disable())"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_progress_is_shown_in_a_kernel_and_left_to_tqdm_elsewhere():
    assert _disable("import ipykernel; ") == "False"
    assert _disable("") == "None"
