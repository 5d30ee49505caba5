"""Lines of code and text output wider than the column, in executed notebooks.

Usage: python tests/line_width.py _build/jupyter_execute/chapters/*/*.ipynb
Prints each line over LIMIT characters (source lines of code cells, stream and
plain-text outputs, tracebacks) and a count per notebook; exits 1 if any.
Markdown prose is not checked: it wraps.
"""
import json
import sys

LIMIT = 78


def wide_lines(path):
    """Yield (cell index, kind, line) for every line over LIMIT."""
    notebook = json.load(open(path))
    for index, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] != "code":
            continue
        texts = [("src", "".join(cell["source"]))]
        for output in cell.get("outputs", []):
            if output["output_type"] == "stream":
                texts.append(("out", "".join(output["text"])))
            elif output["output_type"] == "error":
                texts.append(("err", "\n".join(output["traceback"])))
            elif "text/plain" in output.get("data", {}) and not (
                    {"image/png", "text/html"} & set(output["data"])):
                texts.append(("out", "".join(output["data"]["text/plain"])))
        for kind, text in texts:
            for line in text.split("\n"):
                if len(line) > LIMIT:
                    yield index, kind, line


if __name__ == "__main__":
    total = 0
    for path in sys.argv[1:]:
        found = list(wide_lines(path))
        for index, kind, line in found:
            print(f"{path}: cell {index} {kind} {len(line)}: {line[:90]}")
        print(f"== {path}: {len(found)} lines over {LIMIT}")
        total += len(found)
    print(f"total: {total}")
    sys.exit(1 if total else 0)
