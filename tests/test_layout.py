"""The layout's rules, read from the source: normlib never imports the lab, a
chapter module never imports another chapter's, and no module imports another
module's _private name."""
import ast
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULES = sorted(p for package in ("normlib", "normbook")
                 for p in (ROOT / package).rglob("*.py"))
NOTEBOOKS = sorted((ROOT / "chapters").rglob("*.ipynb"))


def module_name(path):
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(tree, here):
    """(module, name or None) of every import in `tree`, relative ones
    resolved against the module `here`."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = here.split(".")[:len(here.split(".")) - node.level]
                base = ".".join(package + ([base] if base else []))
            found += [(base, alias.name) for alias in node.names]
    return found


def chapter_of(module):
    """'normbook.ch09_why_bn_works' for a chapter's module (or package)."""
    parts = module.split(".")
    if len(parts) > 1 and parts[0] == "normbook" and parts[1][:2] == "ch":
        return ".".join(parts[:2])
    return None


def test_the_tree_has_a_library_a_common_lab_and_chapter_modules():
    names = {module_name(p) for p in MODULES}
    assert {"normlib.functional", "normlib.nn", "normbook.common"} <= names
    assert len({chapter_of(n) for n in names} - {None}) >= 7


@pytest.mark.parametrize("path", MODULES, ids=module_name)
def test_imports_follow_the_layout(path):
    here = module_name(path)
    for module, name in imports(ast.parse(path.read_text()), here):
        if not module.startswith(("normlib", "normbook")):
            continue
        if here.startswith("normlib"):
            assert not module.startswith("normbook"), \
                f"{here} imports the lab ({module})"
        theirs = chapter_of(module)
        assert theirs in (None, chapter_of(here)), \
            f"{here} imports another chapter's module, {module}"
        if name is not None and name.startswith("_") and name != "__version__":
            assert module == here, f"{here} imports {module}'s private {name}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_chapters_import_only_public_names(path):
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    code = "\n".join("".join(c["source"]) for c in cells
                     if c["cell_type"] == "code")
    for module, name in imports(ast.parse(code), "chapter"):
        if module.startswith(("normlib", "normbook")):
            private = [p for p in module.split(".") + [name or ""]
                       if p.startswith("_")]
            assert not private, f"{path.name} imports {module} {name}"
