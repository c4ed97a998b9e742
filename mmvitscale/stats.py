"""Ranks, the statistic every floor shares (the search algorithms rank proxy scores, the
studies rank effects); :mod:`mmvitscale.experiments.stats` re-exports it beside the study
statistics."""
import math
from typing import List, Optional, Sequence

__all__ = ['ranks']


def ranks(values: Sequence[Optional[float]], higher_is_better: bool = True,
          method: str = 'average') -> List[float]:
    """0-based ranks, best first; non-finite values and ``None`` rank last (a singular NTK, a
    broken model).

    ``method='average'``: ties share their mean rank; ``'ordinal'``: ties keep input order;
    ``'dense'``: ties share the smallest rank and the next value takes the next integer
    (``scipy.stats.rankdata(method='dense') - 1``).
    """
    if method not in ('average', 'ordinal', 'dense'):
        raise ValueError(f"method must be 'average', 'ordinal' or 'dense', got {method!r}")

    def key(v: Optional[float]) -> float:
        if v is None or not math.isfinite(v):
            return math.inf
        return -float(v) if higher_is_better else float(v)

    keys = [key(v) for v in values]
    order = sorted(range(len(keys)), key=lambda i: keys[i])
    out = [0.0] * len(keys)
    i, distinct = 0, 0
    while i < len(order):
        j = i
        if method != 'ordinal':
            while j + 1 < len(order) and keys[order[j + 1]] == keys[order[i]]:
                j += 1
        for r, k in enumerate(order[i:j + 1]):
            out[k] = ((i + j) / 2 if method == 'average' else
                      float(distinct) if method == 'dense' else float(i + r))
        i, distinct = j + 1, distinct + 1
    return out


# ---------------------------------------------------------------------------- Kendall tau
