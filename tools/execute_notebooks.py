"""Re-run notebooks top to bottom in full mode and store their outputs in place (``make execute``).

Usage: ``python tools/execute_notebooks.py [PATH ...]`` (files or folders; default ``notebooks``).
Prints the wall-clock time of each notebook, the figure the budgets in the README refer to.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]


def execute(path: Path, timeout: int = 1800) -> float:
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=False,
                            # stored widget state makes the book load an old widget manager that draws nothing
                            store_widget_state=False,
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    nbformat.write(nb, path)
    return seconds


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if os.environ.get("KDTOOLS_SMOKE", "").strip() not in ("", "0"):
        print("KDTOOLS_SMOKE is set: committed notebooks must hold the outputs of a full run. Unset it.")
        return 2
    targets = [Path(a) for a in argv] or [ROOT / "notebooks"]
    paths = []
    for t in targets:
        paths += sorted(t.rglob("*.ipynb")) if t.is_dir() else [t]
    paths = [p for p in paths if ".ipynb_checkpoints" not in p.parts and "student" not in p.parts]
    for p in paths:
        print(f"executing {p} ...", flush=True)
        print(f"  {execute(p):.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
