"""Seed aggregation and markdown tables."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["aggregate", "markdown_table"]


def aggregate(
    rows: Iterable[Mapping[str, Any]], keys: Sequence[str], values: Sequence[str]
) -> list[dict[str, Any]]:
    """Group ``rows`` by ``keys`` and give mean, std (ddof=0) and n of each of ``values``.

    Returns one dict per group, in first-seen order, with ``<value>_mean``,
    ``<value>_std`` and ``n``.
    """
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    out = []
    for key, members in groups.items():
        agg: dict[str, Any] = dict(zip(keys, key, strict=True))
        agg["n"] = len(members)
        for v in values:
            xs = np.asarray([m[v] for m in members], dtype=np.float64)
            agg[f"{v}_mean"] = float(xs.mean())
            agg[f"{v}_std"] = float(xs.std())
        out.append(agg)
    return out


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """Render rows as a markdown table; ``columns`` are ``(header, format)`` pairs.

    A format is a ``str.format`` template over the row's keys, e.g.
    ``("accuracy", "{accuracy_mean:.2%} ± {accuracy_std:.2%}")``.
    """
    head = "| " + " | ".join(h for h, _ in columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(fmt.format(**row) for _, fmt in columns) + " |" for row in rows]
    return "\n".join([head, rule, *body])
