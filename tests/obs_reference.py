"""A straightforward NumPy (float64) optimal-brain-surgeon pruner: SparseGPT's reference.

Columns of ``W (out, in)`` are processed one at a time with the explicit inverse Hessian
of the columns not yet processed (Gaussian elimination, no Cholesky, no lazy blocks):
``w_c`` is replaced by its masked copy ``q_c``, every later column gets
``-(w_c - q_c)/[H⁻¹]_cc · [H⁻¹]_c,:``, then column ``c`` is eliminated from ``H⁻¹``. The
mask of each block of columns is chosen from ``w²/[H⁻¹]_cc`` with the inverse Hessian of
the moment each column is processed (the quantity SparseGPT reads off the Cholesky
factor), over the block (or per row) with the same exact counts.
"""

from __future__ import annotations

import numpy as np


def _lowest(scores: np.ndarray, k: int, per_row: bool, valid: np.ndarray) -> np.ndarray:
    scores = np.where(valid[None, :], scores, np.inf)
    if per_row:
        ranks = np.argsort(np.argsort(scores, axis=1, kind="stable"), axis=1, kind="stable")
        return ranks < k
    flat = scores.ravel()
    ranks = np.empty(flat.size, np.int64)
    ranks[np.argsort(flat, kind="stable")] = np.arange(flat.size)
    return (ranks < k).reshape(scores.shape)


def obs_prune(w: np.ndarray, h: np.ndarray, counts, *, block: int, damp: float = 0.01,
              nm: tuple[int, int] | None = None, per_row: bool = False):
    """``w (out, in)``, Hessian ``h (in, in)`` -> (pruned w, keep mask), float64."""
    w = np.array(w, np.float64)
    h = np.array(h, np.float64)
    cols = w.shape[1]
    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h += damp * np.mean(np.diag(h)) * np.eye(cols)
    # the inverse Hessian of columns c.. at the moment column c is processed
    hinv = np.linalg.inv(h)
    hinvs = []
    for c in range(cols):
        hinvs.append(hinv.copy())
        hinv = hinv - np.outer(hinv[:, c], hinv[c, :]) / hinv[c, c]
        hinv[c, :] = 0.0
        hinv[:, c] = 0.0
    diag = np.array([hinvs[c][c, c] for c in range(cols)])
    pruned = np.zeros(w.shape, bool)
    for b, start in enumerate(range(0, cols, block)):
        stop = min(start + block, cols)
        if nm is None:
            scores = w[:, start:stop] ** 2 / diag[None, start:stop]
            pruned[:, start:stop] = _lowest(scores, int(counts[b]), per_row,
                                            np.ones(stop - start, bool))
        for c in range(start, stop):
            if nm is not None and (c - start) % nm[1] == 0:
                n, m = nm
                scores = w[:, c:c + m] ** 2 / diag[None, c:c + m]
                pruned[:, c:c + m] = _lowest(scores, m - n, True, np.ones(m, bool))
            q = np.where(pruned[:, c], 0.0, w[:, c])
            err = (w[:, c] - q) / hinvs[c][c, c]
            w[:, c:] -= np.outer(err, hinvs[c][c, c:])
            w[:, c] = q
    return w, ~pruned
