"""Run every chapter once per seed base and print which cells failed where.

    python tools/robust.py [--seeds "1 2 3 4"] [--kernels default]
                           [notebooks ...]

Each chapter runs in a fresh kernel (as nbval and the book run it) with
NORMBOOK_SEED set to the base, so every seed of the chapter moves; two
chapters run at a time. The executed notebooks are kept in
_build/robust/seed-<base>/ to read the numbers a draw produced. The table
lists, per chapter and base, "ok" or the cells that raised (numbered as in
the notebook file, from 0), with the chapter's time; below it, each failure's
assert and error, and the range of every number the prose quotes with glue
over the bases. Exit status 1 if any cell failed on any base.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "_build" / "robust"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def failures(notebook):
    """[(cell index, 'failing line | Error: message')] of an executed
    notebook."""
    found = []
    for index, cell in enumerate(notebook["cells"]):
        if "raises-exception" in cell.get("metadata", {}).get("tags", []):
            continue
        for output in cell.get("outputs", []):
            if output.get("output_type") != "error":
                continue
            trace = ANSI.sub("", "\n".join(output.get("traceback", [])))
            marked = [re.sub(r"^-+>\s*\d+\s*", "", line).strip()
                      for line in trace.splitlines()
                      if re.match(r"-+>\s*\d+", line)]
            line = marked[0] if marked else ""
            error = f"{output.get('ename')}: {output.get('evalue')}"[:200]
            found.append((index, f"{line} | {error}" if line else error))
    return found


def glued(notebook):
    """{key: value} of the numbers a notebook glued (myst-nb's glue).

    A value whose text is not a plain number (e.g. 'np.float64(0.5)') is
    kept as its text: myst-nb cannot format it into the prose.
    """
    values = {}
    for cell in notebook["cells"]:
        for output in cell.get("outputs", []):
            record = output.get("metadata", {}).get("scrapbook")
            if not record:
                continue
            text = output["data"].get(record["mime_prefix"] + "text/plain", "")
            try:
                values[record["name"]] = float(text)
            except ValueError:
                values[record["name"]] = text
    return values


def run_chapter(path, base, kernels):
    env = dict(os.environ, NORMBOOK_SEED=str(base))
    env.pop("ATEN_CPU_CAPABILITY", None)
    if kernels:
        env["ATEN_CPU_CAPABILITY"] = kernels
    folder = OUT / f"seed-{base}"
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook",
         "--execute", "--allow-errors", "--ExecutePreprocessor.timeout=-1",
         "--output-dir", str(folder), str(path)],
        cwd=path.parent, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    executed = folder / path.name
    if done.returncode != 0 or not executed.exists():
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return seconds, [("-", f"nbconvert failed: {tail}")], {}
    notebook = json.loads(executed.read_text(encoding="utf-8"))
    values = glued(notebook)
    unformattable = [("glue", f"{key} = {value!r} is not a plain number: "
                      "glue float(value)")
                     for key, value in values.items()
                     if isinstance(value, str)]
    return seconds, failures(notebook) + unformattable, values


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1 2 3 4",
                        type=lambda text: [int(b) for b in
                                           text.replace(",", " ").split()],
                        help='the seed bases, e.g. "1 2 3 4"')
    parser.add_argument("--kernels",
                        default=os.environ.get("ATEN_CPU_CAPABILITY", ""),
                        help="ATEN_CPU_CAPABILITY ('default': torch's "
                             "portable kernels; empty: the CPU's best)")
    parser.add_argument("--parallel", type=int, default=2,
                        help="chapters run at a time")
    parser.add_argument("notebooks", nargs="*", type=Path)
    args = parser.parse_args()
    notebooks = [p.resolve() for p in args.notebooks] or sorted(
        (ROOT / "chapters").glob("part*/*.ipynb"))
    jobs = [(path, base) for base in args.seeds for path in notebooks]
    with ThreadPoolExecutor(args.parallel) as pool:
        futures = {job: pool.submit(run_chapter, *job, args.kernels)
                   for job in jobs}
        results = {}
        for (path, base), future in futures.items():
            results[path, base] = future.result()
            seconds, failed, _ = results[path, base]
            print(f"base {base} {path.stem}: {seconds:.0f} s, "
                  f"{len(failed)} failed", flush=True)
    kernels = args.kernels or "the CPU's best"
    print(f"\nkernels: {kernels}. Failed cells (numbered from 0) per chapter "
          "and base, and the chapter's time")
    print("| chapter | " + " | ".join(f"base {b}" for b in args.seeds) + " |")
    print("|---|" + "---|" * len(args.seeds))
    for path in notebooks:
        row = []
        for base in args.seeds:
            seconds, failed, _ = results[path, base]
            cells = ", ".join(f"cell {cell}" for cell, _ in failed)
            row.append(f"{cells or 'ok'} ({seconds:.0f} s)")
        print(f"| {path.stem} | " + " | ".join(row) + " |")
    print("\nnumbers the prose quotes (glued), lowest and highest over the "
          "bases")
    for path in notebooks:
        keys = sorted({key for base in args.seeds
                       for key in results[path, base][2]})
        for key in keys:
            values = [results[path, base][2].get(key) for base in args.seeds]
            numbers = [v for v in values if isinstance(v, float)]
            if numbers:
                print(f"  {key}: {min(numbers):.4g} to {max(numbers):.4g}")
    problems = [(base, path.stem, cell, why)
                for (path, base), (_, failed, _) in results.items()
                for cell, why in failed]
    for base, chapter, cell, why in problems:
        print(f"base {base} {chapter} cell {cell}: {why}")
    print(f"executed notebooks: {OUT.relative_to(ROOT)}/seed-<base>/")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
