"""The exact MILP solve behind ``Optimizer``: HiGHS plus LP reduced-cost fixing.

HiGHS alone spends most of a 20-variant x 50-bucket solve in root cut separation
over ~1,100 flow columns. The LP relaxation is tight (0.03-0.4% below the integer
optimum), so before the MILP we

1. solve the LP relaxation (``linprog``, dual simplex): bound ``z_lp`` and reduced
   costs ``d`` of the integer replica counts;
2. get an upper bound ``ub``: the cost of an incumbent (the previous interval's
   counts, or the current fleet) completed by an LP, or else the MILP restricted to
   the counts with zero reduced cost (the others held at their LP bound);
3. tighten: every solution costing <= ``ub`` has ``n_v <= lo_v + (ub - z_lp) / d_v``
   (``d_v > 0``; symmetric at the upper bound), the textbook reduced-cost argument
   (any feasible point costs >= z_lp + sum_v d_v (n_v - bound_v)). A variant held at
   0 takes its flow columns with it;
4. solve the tightened MILP with ``mip_rel_gap = 0``: its optimum is the global one,
   since every point it excludes costs more than ``ub``, and ``ub`` itself stays in.

If the restricted MILP of step 2 held every other count at a bound the tightening
also forces, it is already the optimum and step 4 is skipped. Deterministic: HiGHS
single-threaded, fixed model order.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, linprog, milp
from scipy.sparse import csr_matrix, vstack

# One thread: the policy runs inside the Serve controller, and HiGHS's worker threads spin on a loaded
# machine. mip_rel_gap 0: exact (HiGHS's default 1e-4 may stop 0.01% above the optimum); strong-branching
# reliability 0 and no sub-MIP heuristics: measured fastest here (the incumbent comes from step 2).
HIGHS_OPTIONS = {"presolve": True, "threads": 1, "mip_rel_gap": 0.0, "mip_pscost_minreliable": 0,
                 "mip_heuristic_effort": 0.0, "mip_heuristic_run_rins": False, "mip_heuristic_run_rens": False,
                 "mip_heuristic_run_feasibility_jump": False}
# Below this many columns HiGHS alone is faster than the extra LPs of the fixing.
FIXING_MIN_COLUMNS = 150


@dataclass(slots=True)
class Model:
    """min c.x  s.t.  lo <= A x <= hi,  lb <= x <= ub;  x[:n_int] integer (replica counts)."""

    c: np.ndarray
    A: csr_matrix
    lo: np.ndarray
    hi: np.ndarray
    lb: np.ndarray
    ub: np.ndarray
    n_int: int
    uses: csr_matrix  # (n_int x ncols) boolean: column j puts load on count i (a capacity row)


@dataclass(slots=True)
class Solution:
    x: np.ndarray | None
    message: str
    path: str  # milp | fixed | restricted | lp_infeasible
    lp_bound: float | None = None
    free_counts: int = 0  # integer counts left free by the fixing


def _milp(m: Model, lb: np.ndarray, ub: np.ndarray, cols: np.ndarray | None = None):
    c, A = (m.c, m.A) if cols is None else (m.c[cols], m.A[:, cols])
    if cols is not None:
        lb, ub = lb[cols], ub[cols]
    integrality = np.zeros(len(c))
    integrality[:m.n_int] = 1  # the counts stay the first columns
    with warnings.catch_warnings():  # HiGHS options scipy does not list are passed verbatim, with a warning
        warnings.simplefilter("ignore", RuntimeWarning)
        return milp(c, constraints=[LinearConstraint(A, m.lo, m.hi)] if A.shape[0] else None,
                    integrality=integrality, bounds=Bounds(lb, ub), options=dict(HIGHS_OPTIONS))


def _lp(m: Model, lb: np.ndarray, ub: np.ndarray):
    eq = m.lo == m.hi
    up = ~eq & np.isfinite(m.hi)
    down = ~eq & np.isfinite(m.lo)
    return linprog(m.c, A_ub=vstack([m.A[up], -m.A[down]]).tocsr(), b_ub=np.concatenate([m.hi[up], -m.lo[down]]),
                   A_eq=m.A[eq], b_eq=m.hi[eq], bounds=np.column_stack([lb, ub]), method="highs-ds")


def _columns(m: Model, nhi: np.ndarray) -> np.ndarray:
    """Columns still usable when the counts with ``nhi == 0`` are held at 0."""
    dead = np.flatnonzero(nhi[:m.n_int] == 0)
    keep = np.ones(len(m.c), dtype=bool)
    if len(dead):
        keep &= ~np.asarray(m.uses[dead].sum(axis=0)).ravel().astype(bool)
    keep[:m.n_int] = True
    return np.flatnonzero(keep)


def _tighten(m: Model, d: np.ndarray, gap: float) -> tuple[np.ndarray, np.ndarray]:
    lb, ub = m.lb.copy(), m.ub.copy()
    k = m.n_int
    pos, neg = d[:k] > 1e-7, d[:k] < -1e-7
    with np.errstate(divide="ignore", invalid="ignore"):
        ub[:k] = np.where(pos, np.minimum(ub[:k], lb[:k] + np.floor(gap / d[:k] + 1e-9)), ub[:k])
        lb[:k] = np.where(neg, np.maximum(lb[:k], ub[:k] - np.floor(gap / -d[:k] + 1e-9)), lb[:k])
    return lb, ub


def _incumbent_cost(m: Model, counts: np.ndarray) -> float | None:
    """Cost of the best completion of integer ``counts`` (an LP), or None if it cannot be completed."""
    n = np.clip(np.round(counts), m.lb[:m.n_int], m.ub[:m.n_int])
    lb, ub = m.lb.copy(), m.ub.copy()
    lb[:m.n_int] = ub[:m.n_int] = n
    res = _lp(m, lb, ub)
    return float(res.fun) if res.status == 0 else None


def solve(m: Model, incumbents: list[np.ndarray] = (), fixing: bool | None = None) -> Solution:
    """The exact optimum of ``m`` (see the module docstring); ``incumbents``: candidate integer counts."""
    free = int(np.sum(m.lb[:m.n_int] < m.ub[:m.n_int]))
    if fixing is None:
        fixing = free > 0 and len(m.c) >= FIXING_MIN_COLUMNS
    if not fixing or free == 0:
        res = _milp(m, m.lb, m.ub)
        return Solution(res.x, res.message, "milp", free_counts=free)
    lp = _lp(m, m.lb, m.ub)
    if lp.status != 0:  # infeasible bounds/budget/ratios: let the MILP say so
        res = _milp(m, m.lb, m.ub)
        return Solution(res.x, res.message, "lp_infeasible", free_counts=free)
    z = float(lp.fun)
    d = lp.lower.marginals + lp.upper.marginals
    slack = lambda ub_: ub_ - z + 1e-6 * max(1.0, abs(ub_)) + 1e-9  # noqa: E731
    ub_cost = min((c for c in (_incumbent_cost(m, n) for n in incumbents) if c is not None), default=None)
    if ub_cost is None or slack(ub_cost) > 0.01 * max(1.0, abs(z)):  # no good incumbent: restricted MILP
        lb0, ub0 = _tighten(m, d, 0.0)
        r0 = _milp(m, lb0, ub0, _columns(m, ub0))
        if r0.x is not None:
            lb1, ub1 = _tighten(m, d, slack(float(r0.fun)))
            if np.array_equal(lb1[:m.n_int], lb0[:m.n_int]) and np.array_equal(ub1[:m.n_int], ub0[:m.n_int]):
                x = np.zeros(len(m.c))
                x[_columns(m, ub0)] = r0.x
                return Solution(x, r0.message, "restricted", z, int(np.sum(lb0[:m.n_int] < ub0[:m.n_int])))
            ub_cost = float(r0.fun) if ub_cost is None else min(ub_cost, float(r0.fun))
    if ub_cost is None:
        res = _milp(m, m.lb, m.ub)
        return Solution(res.x, res.message, "milp", z, free)
    lb1, ub1 = _tighten(m, d, slack(ub_cost))
    cols = _columns(m, ub1)
    res = _milp(m, lb1, ub1, cols)
    x = None
    if res.x is not None:
        x = np.zeros(len(m.c))
        x[cols] = res.x
    return Solution(x, res.message, "fixed", z, int(np.sum(lb1[:m.n_int] < ub1[:m.n_int])))
