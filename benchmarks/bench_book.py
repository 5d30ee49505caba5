"""Time each chapter notebook's execution and the whole book build (run with
`make bench`).

Each notebook runs alone in a fresh kernel from its own folder, as Jupyter
Book runs it; then `jupyter-book build` runs once from scratch (it executes
every notebook again).
"""
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

import nbformat
from nbclient import NotebookClient

ROOT = pathlib.Path(__file__).resolve().parents[1]
BUDGET_S = 150        # per chapter, fresh kernel, 2-core machine (README)
BOOK_BUDGET_S = 720   # make book from a warm .venv


def time_notebook(path):
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={
        "metadata": {"path": str(path.parent)}}).execute()
    return time.perf_counter() - start


def time_build():
    out = pathlib.Path(tempfile.mkdtemp(prefix="normbook-bench-"))
    start = time.perf_counter()
    subprocess.run([str(ROOT / ".venv/bin/jupyter-book"), "build", str(ROOT),
                    "--path-output", str(out), "-W", "-n", "--keep-going",
                    "-q"], check=True, stdout=subprocess.DEVNULL)
    elapsed = time.perf_counter() - start
    shutil.rmtree(out)
    return elapsed


def main():
    print(f"{'notebook':55s} {'seconds':>8s} {'budget':>7s}")
    over = []
    for path in sorted(ROOT.glob("chapters/*/*.ipynb")):
        seconds, budget = time_notebook(path), BUDGET_S
        over += [path.name] if seconds > budget else []
        print(f"{str(path.relative_to(ROOT)):55s} {seconds:8.1f} "
              f"{budget:7d}")
    if "--no-build" not in sys.argv:
        print(f"{'jupyter-book build (all notebooks executed)':55s} "
              f"{time_build():8.1f} {BOOK_BUDGET_S:7d}")
    print("over budget: " + (", ".join(over) if over else "none"))


if __name__ == "__main__":
    main()
