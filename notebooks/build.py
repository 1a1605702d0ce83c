"""Build the Colab notebooks ``notebooks/*.ipynb`` from their sources ``notebooks/*.py``.

The ``.py`` files are the source of truth, in jupytext's "percent" format: a
cell starts at a line ``# %%`` (code) or ``# %% [markdown]`` (markdown, every
line commented with ``# ``); the optional ``# ---`` … ``# ---`` block at the
top is jupytext's header. They run as plain Python scripts
(``SPARSEJAX_SMOKE=1 python notebooks/01_quickstart.py``), open as notebooks
in Jupyter with jupytext, and this script writes the ``.ipynb`` that Colab
opens from GitHub: nbformat 4.5, outputs cleared, deterministic cell ids, so
the generated file only changes when the source does. It needs only the
standard library; ``tests/test_notebooks.py`` checks that every committed
``.ipynb`` equals this script's output.

Usage::

    python notebooks/build.py          # rewrite every notebook from its source
    python notebooks/build.py --check  # exit 1 if a notebook is out of date
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import sys

HERE = pathlib.Path(__file__).resolve().parent
SOURCE_GLOB = "[0-9][0-9]_*.py"
_MARKER = re.compile(r"^# %%(?P<rest>.*)$")

METADATA = {
    "jupytext": {"formats": "ipynb,py:percent"},
    "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
    "language_info": {"name": "python"},
}


def parse_percent(text: str, name: str = "<source>") -> list[tuple[str, str]]:
    """Cells ``[(cell_type, source), ...]`` of a percent-format script.

    Leading and trailing blank lines of a cell are dropped; markdown lines lose
    their ``# `` prefix.

    Raises:
      ValueError: code before the first ``# %%`` marker, a markdown line that
        is not a comment, an unknown cell type, an unterminated header or an
        empty cell (the message names the file and line).
    """
    lines = text.splitlines()
    start = 0
    if lines and lines[0] == "# ---":
        try:
            start = lines.index("# ---", 1) + 1
        except ValueError:
            raise ValueError(f"{name}: jupytext header opened on line 1 is never closed") from None
    cells: list[tuple[str, int, list[str]]] = []
    for number, line in enumerate(lines[start:], start=start + 1):
        marker = _MARKER.match(line)
        if marker:
            rest = marker["rest"].strip()
            if rest not in ("", "[markdown]"):
                raise ValueError(
                    f"{name}:{number}: unknown cell marker {line!r}; use '# %%' or "
                    "'# %% [markdown]'"
                )
            cells.append(("markdown" if rest else "code", number, []))
        elif cells:
            cells[-1][2].append(line)
        elif line.strip():
            raise ValueError(f"{name}:{number}: text before the first '# %%' cell marker")
    out = []
    for cell_type, number, body in cells:
        if cell_type == "markdown":
            md = []
            for offset, line in enumerate(body, start=number + 1):
                if line.startswith("# ") or line == "#":
                    md.append(line[2:])
                elif line.strip():
                    raise ValueError(
                        f"{name}:{offset}: markdown lines must start with '# ', got {line!r}"
                    )
                else:
                    md.append("")
            body = md
        source = "\n".join(body).strip("\n")
        if not source.strip():
            raise ValueError(f"{name}:{number}: empty cell")
        out.append((cell_type, source))
    return out


def to_notebook(text: str, name: str = "<source>") -> dict:
    """The nbformat-4.5 notebook (a JSON-able dict) of a percent-format script."""
    cells = []
    for index, (cell_type, source) in enumerate(parse_percent(text, name)):
        lines = source.splitlines(keepends=True)
        cell = {"cell_type": cell_type, "id": f"cell-{index:02d}", "metadata": {},
                "source": lines}
        if cell_type == "code":
            cell.update(execution_count=None, outputs=[])
        cells.append(cell)
    return {"cells": cells, "metadata": METADATA, "nbformat": 4, "nbformat_minor": 5}


def render(notebook: dict) -> str:
    """Serialise as Jupyter does (one-space indent, sorted keys, UTF-8, final newline)."""
    return json.dumps(notebook, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def sources(folder: pathlib.Path = HERE) -> list[pathlib.Path]:
    """The notebook sources ``NN_name.py`` of ``folder``, sorted."""
    return sorted(folder.glob(SOURCE_GLOB))


def build(folder: pathlib.Path = HERE, check: bool = False) -> list[pathlib.Path]:
    """Write (or, with ``check``, only compare) every ``.ipynb``; returns those out of date."""
    stale = []
    for src in sources(folder):
        target = src.with_suffix(".ipynb")
        text = render(to_notebook(src.read_text(encoding="utf-8"), src.name))
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            stale.append(target)
            if not check:
                target.write_text(text, encoding="utf-8")
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale notebooks")
    args = parser.parse_args(argv)
    stale = build(check=args.check)
    for path in stale:
        print(f"{'out of date' if args.check else 'wrote'}: {path.relative_to(HERE.parent)}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
