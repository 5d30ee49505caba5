"""Run every chapter under nbval once per seed base and print which asserts failed where.

    python tools/robust.py --seeds 1 2 3 4 [--kernels default] [chapters ...]

Each base is a fresh `pytest --nbval-lax` run over the chapters with
NORMBOOK_SEED set to it (so every seed of every chapter moves). The table
lists, per chapter and base, "ok" or the cells that failed, with the time the
chapter took; below it, each failure's first error line. The exit status is 1
if any cell failed on any base.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def chapter_of(testcase):
    """'chapters/part2/04_small_batches.ipynb' -> '04_small_batches'."""
    name = testcase.get("file") or testcase.get("classname", "")
    match = re.search(r"(\d\d_[A-Za-z0-9_]+)(\.ipynb)?$", name.replace("/", "."))
    return match.group(1) if match else name


def first_error(text):
    """The failing source line (nbval marks it with ---->) and the error line."""
    text = ANSI.sub("", text or "")
    marked = [line.split("---->", 1)[1].strip() for line in text.splitlines()
              if "---->" in line]
    errors = [line.strip() for line in text.splitlines()
              if re.match(r"\s*[A-Za-z_.]*(Error|Exception)\b", line)]
    parts = ([re.sub(r"^\d+\s*", "", marked[-1])] if marked else []) + errors[-1:]
    return " | ".join(parts)[:300] or text.strip().splitlines()[-1][:300]


def run_base(base, kernels, paths, workers):
    env = dict(os.environ, NORMBOOK_SEED=str(base))
    if kernels:
        env["ATEN_CPU_CAPABILITY"] = kernels
    else:
        env.pop("ATEN_CPU_CAPABILITY", None)
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.xml"
        command = [sys.executable, "-m", "pytest", "-o", "addopts=",
                   "-p", "no:cacheprovider", "-q", "--nbval-lax",
                   "-n", str(workers), "--dist", "loadfile",
                   f"--junitxml={report}", *paths]
        subprocess.run(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=False)
        if not report.exists():
            raise RuntimeError(f"pytest wrote no report for base {base}")
        tree = ET.parse(report)
    seconds, failed = defaultdict(float), defaultdict(list)
    for case in tree.iter("testcase"):
        chapter = chapter_of(case)
        seconds[chapter] += float(case.get("time", 0))
        for problem in list(case.iter("failure")) + list(case.iter("error")):
            cell = case.get("name", "?").replace("Cell ", "")
            failed[chapter].append(
                (cell, first_error(problem.get("message", "") + "\n" + (problem.text or ""))))
    return seconds, failed


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("--kernels", default=os.environ.get("ATEN_CPU_CAPABILITY", ""),
                        help="ATEN_CPU_CAPABILITY for the runs ('default': the "
                             "portable kernels; empty: the CPU's best)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("paths", nargs="*", default=["chapters"])
    args = parser.parse_args()
    results = {}
    for base in args.seeds:
        print(f"base {base}: running ...", flush=True)
        results[base] = run_base(base, args.kernels, args.paths, args.workers)
        bad = sum(len(v) for v in results[base][1].values())
        print(f"base {base}: {bad} failed cell(s)", flush=True)
    chapters = sorted({c for seconds, _ in results.values() for c in seconds})
    kernels = args.kernels or "the CPU's best"
    print(f"\nkernels: {kernels}; cells that failed per chapter "
          "(ok: none), and the chapter's time in s")
    print("| chapter | " + " | ".join(f"base {b}" for b in args.seeds) + " |")
    print("|---|" + "---|" * len(args.seeds))
    for chapter in chapters:
        row = []
        for base in args.seeds:
            seconds, failed = results[base]
            cells = ", ".join(f"cell {cell}" for cell, _ in failed.get(chapter, []))
            row.append(f"{cells or 'ok'} ({seconds.get(chapter, 0):.0f} s)")
        print(f"| {chapter} | " + " | ".join(row) + " |")
    problems = [(b, c, cell, why) for b in args.seeds
                for c, cells in results[b][1].items() for cell, why in cells]
    for base, chapter, cell, why in problems:
        print(f"base {base} {chapter} cell {cell}: {why}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
