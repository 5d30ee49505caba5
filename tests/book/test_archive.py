"""The book's download (tools/book_archive.py, normbook.zip) runs: built from
this tree, it holds every chapter, both packages and the pins and nothing
built or cached; unpacked in an empty folder and installed as its README
says, it runs a chapter with the normlib it brought.

Offline and quick (about 20 s): the unpacked copy's venv sees the packages
of the venv running these tests (a .pth file; `venv --system-site-packages`
would show the base interpreter's, which lack the pins), so pip finds every
pin installed and builds the editable install without downloading.
"""
import json
import os
import re
import shlex
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import book_archive  # noqa: E402  (a script's module, not a package)

CHAPTER = "chapters/part1/02_batch_norm.ipynb"  # one of the fast ones
BUILT = ("_build/", ".venv/", "__pycache__/", ".pytest_cache/",
         ".ipynb_checkpoints/", ".egg-info/", ".hypothesis/", ".pyc")

if not (ROOT / ".git").exists():
    pytest.skip("not a git checkout: the archive is made from the files "
                "git tracks", allow_module_level=True)


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    path = tmp_path_factory.mktemp("archive") / "normbook.zip"
    book_archive.build(path)
    return path


@pytest.fixture(scope="module")
def names(archive):
    with zipfile.ZipFile(archive) as opened:
        names = opened.namelist()
    prefix = book_archive.FOLDER + "/"
    assert all(name.startswith(prefix) for name in names)
    return {name[len(prefix):] for name in names}


def toc_notebooks():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    files = [entry["file"] for part in toc.get("parts", [])
             for entry in part.get("chapters", [])]
    return [name + ".ipynb" for name in files
            if (ROOT / (name + ".ipynb")).exists()]


def test_it_holds_every_chapter_both_packages_and_the_pins(names):
    chapters = toc_notebooks()
    assert len(chapters) >= 11
    missing = sorted(set(chapters) - names)
    assert not missing, f"left out (does git track them?): {missing}"
    packages = [path for path in book_archive.tracked_files()
                if path.startswith(("normlib/", "normbook/"))]
    assert len(packages) > 20
    assert not set(packages) - names
    for name in ("requirements.txt", "pyproject.toml", "Makefile",
                 "README.md", "_config.yml", "_toc.yml", "pytest.ini"):
        assert name in names


def test_nothing_built_cached_or_of_ci(names):
    slipped = [name for name in names
               if any(part in "/" + name + "/" for part in BUILT)
               or name.startswith((".ci/", ".git"))]
    assert not slipped


def test_its_readme_is_the_readers(archive):
    with zipfile.ZipFile(archive) as opened:
        readme = opened.read(book_archive.FOLDER + "/README.md").decode()
    assert readme == (ROOT / book_archive.README).read_text(encoding="utf-8")
    assert "pip install -r requirements.txt -e ." in readme
    assert "GPU" in readme and "torch==2.13.0" in readme


def test_its_notebooks_have_no_outputs(archive):
    with zipfile.ZipFile(archive) as opened:
        for name in opened.namelist():
            if name.endswith(".ipynb"):
                cells = json.loads(opened.read(name))["cells"]
                assert not any(cell.get("outputs") for cell in cells), name


def test_the_same_tree_gives_the_same_bytes(archive, tmp_path):
    again = tmp_path / "again.zip"
    book_archive.build(again)
    assert again.read_bytes() == archive.read_bytes()


def readme_install_command(readme):
    """The README's pip command, as a list of arguments."""
    lines = [line.split("#")[0].strip() for line in readme.splitlines()]
    found = [line for line in lines
             if re.match(r"\.venv/bin/python -m pip install ", line)]
    assert len(found) == 1, found
    return shlex.split(found[0])


RUN_CHAPTER = """
import sys
import nbformat
from nbclient import NotebookClient
path = sys.argv[1]
notebook = nbformat.read(path, as_version=4)
notebook.cells.append(nbformat.v4.new_code_cell(
    "import sys, normbook, normlib\\n"
    "print(sys.prefix, normlib.__file__, normbook.__file__, sep='\\\\n')"))
NotebookClient(notebook, timeout=600, kernel_name="python3",
               resources={"metadata": {"path": str(sys.argv[2])}}).execute()
print(notebook.cells[-1].outputs[0]["text"], end="")
"""


def test_unpacked_it_installs_as_its_readme_says_and_runs_a_chapter(
        archive, tmp_path):
    with zipfile.ZipFile(archive) as opened:
        opened.extractall(tmp_path)
    folder = tmp_path / book_archive.FOLDER
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
           and not key.startswith("PIP_")}
    env.update(PIP_NO_INDEX="1", PIP_NO_CACHE_DIR="1", PIP_NO_INPUT="1",
               PIP_DISABLE_PIP_VERSION_CHECK="1",
               # this pip's spelling of --no-build-isolation: setuptools
               # comes from the tests' venv, not from the index
               PIP_NO_BUILD_ISOLATION="0",
               JUPYTER_PATH=str(folder / ".venv" / "share" / "jupyter"))

    def run(*command):
        done = subprocess.run(command, cwd=folder, env=env, text=True,
                              capture_output=True, timeout=600)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done.stdout

    # the README's `python3 -m venv .venv`, then this venv's packages in it
    run(sys.executable, "-m", "venv", "--without-pip", ".venv")
    python = folder / ".venv" / "bin" / "python"
    site = Path(run(str(python), "-c",
                    "import sysconfig; print(sysconfig.get_path('purelib'))"
                    ).strip())
    ours = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    (site / "_tests_venv.pth").write_text("\n".join(sorted(ours)) + "\n")

    command = readme_install_command((folder / "README.md").read_text())
    run(str(folder / command[0]), *command[1:])
    run(str(python), "-m", "ipykernel", "install", "--sys-prefix",
        "--name", "python3")
    notebook = folder / CHAPTER
    prefix, normlib_file, normbook_file = run(
        str(python), "-c", RUN_CHAPTER, str(notebook), str(notebook.parent)
    ).splitlines()[-3:]
    folder = folder.resolve()
    assert Path(prefix).resolve() == folder / ".venv"
    assert Path(normlib_file).resolve().is_relative_to(folder / "normlib")
    assert Path(normbook_file).resolve().is_relative_to(folder / "normbook")
