"""Exact, deterministic k-nearest search by Hamming distance over a faiss binary index."""

from __future__ import annotations

from collections.abc import Sequence

import faiss
import numpy as np


def hamming_topk(
    index: faiss.IndexBinaryFlat, ids: Sequence[str], query: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Rows and distances of the ``k`` nearest codes, ordered by (distance, id), ties at the boundary kept.

    faiss returns the k nearest in an order of its own among equal distances; this asks for one
    more, and when the boundary is tied collects every tied code with a range search, so the
    result is exact and deterministic.
    """
    n = index.ntotal
    if n == 0 or k <= 0:
        return np.empty(0, np.int64), np.empty(0, np.int32)
    q = np.ascontiguousarray(query.reshape(1, -1), dtype=np.uint8)
    if k >= n:
        dist, rows = index.search(q, n)
    else:
        dist, rows = index.search(q, k + 1)
        if dist[0, k] == dist[0, k - 1]:
            lims, rdist, rrows = index.range_search(q, int(dist[0, k - 1]) + 1)
            dist, rows = rdist[None, :], rrows[None, :]
    dist, rows = dist[0].astype(np.int32), rows[0].astype(np.int64)
    order = np.lexsort((np.asarray(ids)[rows], dist))[:k]
    return rows[order], dist[order]
