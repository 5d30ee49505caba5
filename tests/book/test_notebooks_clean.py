"""Every chapter notebook is committed clean: no outputs, no execution
counts, and it opens with its `# Title`."""
import json
from pathlib import Path

import pytest

CHAPTERS = Path(__file__).resolve().parents[2] / "chapters"
NOTEBOOKS = sorted(p for p in CHAPTERS.rglob("*.ipynb")
                   if ".ipynb_checkpoints" not in p.parts)


def test_there_are_chapters():
    assert NOTEBOOKS, f"no notebooks under {CHAPTERS}"


def source(cell):
    return (cell["source"] if isinstance(cell["source"], str)
            else "".join(cell["source"]))


@pytest.mark.parametrize("path", NOTEBOOKS,
                         ids=lambda p: str(p.relative_to(CHAPTERS)))
def test_notebook_is_clean_and_titled(path):
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    dirty = [i for i, c in enumerate(cells)
             if c["cell_type"] == "code"
             and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not dirty, (f"cells {dirty} have outputs or an execution_count: "
                       "clear them before committing")
    assert cells and cells[0]["cell_type"] == "markdown", (
        "the first cell must be markdown")
    assert source(cells[0]).startswith("# "), (
        "the first cell must start with the '# Title'")


@pytest.mark.parametrize("path", NOTEBOOKS,
                         ids=lambda p: str(p.relative_to(CHAPTERS)))
def test_first_code_cell_says_how_to_install_the_packages(path, monkeypatch):
    """A reader who downloads one notebook learns in its first cell what to
    install."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    first = next(c for c in cells if c["cell_type"] == "code")
    assert "remove-cell" in first.get("metadata", {}).get("tags", []), \
        "the install check is for notebook readers: tag it remove-cell"
    import importlib.util
    # normlib and normbook are installed here: no error
    exec(compile(source(first), str(path), "exec"), {})
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError,
                       match=r"pip install -r requirements\.txt -e \."):
        exec(compile(source(first), str(path), "exec"), {})
