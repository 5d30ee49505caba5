"""The book's download that runs: _build/html/normbook.zip, every chapter's
notebook with normlib, the lab and the pins, in one archive.

    python tools/book_archive.py [--out _build/html/normbook.zip]
                                 (make archive, after make book)

A chapter's .ipynb alone cannot run: it imports normlib and normbook, which
are not on PyPI. The archive holds the files git tracks, as they are in the
working tree (the tree the book was built from; on a fresh clone, the
commit), under one folder, normbook/: the chapters (committed without
outputs), both packages, requirements.txt, pyproject.toml, the Makefile
with everything its targets use (the book's sources, the tests, the tools,
the benchmarks), and in place of the developers' README.md the reader's
short one, tools/archive_README.md. Left out: CI (.ci/, .gitignore). Taken
from git's list, so nothing untracked or ignored (.venv, _build, caches)
can slip in.

Why .zip: every desktop unpacks it with a double click (Windows' Explorer,
macOS' Finder, Linux file managers), where a .tar.gz needs a tool on some.
Reproducible: the entries in sorted order, each dated with the last commit
(or SOURCE_DATE_EPOCH), file modes from git, fixed compression; the same
tree gives the same bytes.
"""
import argparse
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "_build" / "html" / "normbook.zip"  # intro.md links to it
FOLDER = "normbook"                    # the one folder the archive unpacks to
README = "tools/archive_README.md"     # the archive's README.md
LEFT_OUT = (".ci/", ".gitignore", "README.md", README)
DOS_EPOCH = 315532800                  # 1980-01-01, the earliest zip date


def git(*args):
    return subprocess.run(["git", *args], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout


def tracked_files():
    """{path: mode} of the files git tracks that exist in the working tree
    (a file deleted there is on its way out of the tree)."""
    files = {}
    for line in git("ls-files", "-s", "-z").split("\0"):
        if line:
            meta, path = line.split("\t", 1)
            if (ROOT / path).is_file():
                files[path] = int(meta.split()[0], 8)
    return files


def members():
    """[(name in the archive, path in the tree, mode)], sorted by name."""
    chosen = [(path, path, mode) for path, mode in tracked_files().items()
              if not path.startswith(LEFT_OUT)]
    chosen.append(("README.md", README, 0o100644))
    return sorted((f"{FOLDER}/{name}", path, mode)
                  for name, path, mode in chosen)


def source_date():
    """Seconds since the epoch: SOURCE_DATE_EPOCH, else the last commit."""
    stamp = os.environ.get("SOURCE_DATE_EPOCH") or git(
        "log", "-1", "--format=%ct").strip()
    return max(int(stamp), DOS_EPOCH)


def build(out=OUT):
    """Write the archive to `out`; returns the number of files."""
    entries = members()
    date = time.gmtime(source_date())[:6]
    out = Path(out)
    partial = out.with_name(out.name + ".partial")
    with zipfile.ZipFile(partial, "w") as archive:
        for name, path, mode in entries:
            info = zipfile.ZipInfo(name, date_time=date)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3                # Unix, so modes apply
            info.external_attr = (mode & 0o177777) << 16
            archive.writestr(info, (ROOT / path).read_bytes(),
                             compresslevel=9)
    partial.replace(out)
    return len(entries)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if not (ROOT / ".git").exists():
        sys.exit("book_archive: not a git checkout; the archive is made "
                 "from the files git tracks")
    if not args.out.parent.is_dir():
        sys.exit(f"book_archive: no {args.out.parent}; run `make book`")
    count = build(args.out)
    size = args.out.stat().st_size
    print(f"book_archive: {args.out}: {count} files, {size / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
