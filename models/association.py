"""Association measures of two items from their (decayed) co-occurrence counts.

Each takes ``both`` = c(A,B), ``n_a`` = n(A), ``n_b`` = n(B) and ``total`` = N, and
scores how much more often A and B occur together than apart; 0 means no positive
association. :func:`models.cooccurrence.score_row` picks one by ``CoocConfig.scoring``.

>>> log_likelihood_ratio(8.0, 10.0, 10.0, 1000.0) > log_likelihood_ratio(2.0, 10.0, 10.0, 1000.0)
True
>>> cosine(2.0, 4.0, 4.0, 100.0), jaccard(2.0, 4.0, 4.0, 100.0)
(0.5, 0.3333333333333333)
"""

from __future__ import annotations

import math


def log_likelihood_ratio(both: float, n_a: float, n_b: float, total: float) -> float:
    """Dunning's G2 for the association of A and B, 0 if they are not positively associated.

    ``both`` = c(A,B), ``n_a`` = n(A) and ``n_b`` = n(B) are (decayed, possibly
    fractional) counts; ``total`` is N. The 2x2 table is clamped to non-negative cells
    because decayed, pruned counts can be slightly inconsistent.
    """
    k11 = both
    k12 = max(n_a - both, 0.0)
    k21 = max(n_b - both, 0.0)
    k22 = max(total - n_a - n_b + both, 0.0)
    if k11 * (k21 + k22) <= k21 * (k11 + k12):
        return 0.0  # P(B | A) <= P(B | not A): no positive association
    # G2 = 2 * sum k_ij ln(k_ij N / (row_i col_j)), expanded into x ln x terms.
    xlx = _x_log_x
    cells = xlx(k11) + xlx(k12) + xlx(k21) + xlx(k22)
    margins = xlx(k11 + k12) + xlx(k21 + k22) + xlx(k11 + k21) + xlx(k12 + k22)
    return max(0.0, 2.0 * (cells + xlx(k11 + k12 + k21 + k22) - margins))


def cosine(both: float, n_a: float, n_b: float, total: float) -> float:
    return both / math.sqrt(n_a * n_b)


def jaccard(both: float, n_a: float, n_b: float, total: float) -> float:
    return both / (n_a + n_b - both)


def _x_log_x(x: float) -> float:
    return x * math.log(x) if x > 0 else 0.0
