"""The exact MILP solve behind ``Optimizer``: HiGHS plus LP reduced-cost fixing.

HiGHS alone spends most of a 20-variant x 50-bucket solve in root cut separation
over ~1,100 flow columns. The LP relaxation is tight (0.03-0.4% below the integer
optimum), so before the MILP we

1. solve the LP relaxation (``linprog``, dual simplex) and take its row duals ``w``.
   The duals are degenerate where a count sits at 0 (any capacity price between
   what its flows need and its hourly cost is optimal; HiGHS often returns the
   cost, which gives that count a zero reduced cost). We raise each capacity-row
   dual toward 0 as far as every flow column's reduced cost stays >= 0, then
   recompute ``d = c - A'w`` and the dual bound ``L(w) <= z_lp`` honestly: any
   dual-feasible ``w`` gives, for every feasible point x,
   ``c.x >= L(w) + sum_j |d_j| * (distance of x_j from the bound d_j prices)``;
2. solve the MILP restricted to the box of step 3 at gap ``g0 = RESTRICTED_GAP x
   |L|``. If step 3 at its cost ``r0`` gives a box inside that one, nothing outside
   can be cheaper and r0 is the optimum; else ``ub = r0`` (the incumbents, e.g.
   the current fleet completed by an LP, only when the box holds no plan: one
   outside the box costs > L + g0, one inside cannot beat r0);
3. tighten: a count n_i = t is possible within cost ``ub`` only if
   ``d_i (t - bound_i) + d_up_i max(t - cur_i, 0) + d_down_i max(cur_i - t, 0) <= ub - L``,
   where ``up_i >= n_i - cur_i`` and ``down_i >= cur_i - n_i`` are the switch-cost
   columns of the policy's call (``Moves``; without them the last two terms are 0).
   This is a convex piecewise-linear condition, so it leaves an interval of t. A
   count held at 0 takes its flow columns with it;
4. solve the tightened MILP with ``mip_rel_gap = 0``: its optimum is the global one,
   since every point it excludes costs more than ``ub``, and ``ub`` itself stays in.

Deterministic: HiGHS single-threaded, fixed model order, the dual raise in count order.
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
# Step 2's restricted MILP frees the counts that could move within this fraction of the LP bound.
RESTRICTED_GAP = 5e-4


@dataclass(slots=True)
class Moves:
    """Switch-cost columns: ``n_i - up[i] + down[i] == cur[i]`` is a row of the model, up/down >= 0."""

    up: np.ndarray  # column index per count
    down: np.ndarray
    cur: np.ndarray


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
    cap_rows: np.ndarray  # capacity row of each count in ``uses`` order (rows: sum_j a_j x_j - n_i <= 0)
    cap_counts: np.ndarray  # the count each of ``cap_rows`` belongs to
    moves: Moves | None = None


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


def _split(m: Model):
    eq = m.lo == m.hi
    return eq, ~eq & np.isfinite(m.hi), ~eq & np.isfinite(m.lo)


def _lp(m: Model, lb: np.ndarray, ub: np.ndarray):
    eq, up, down = _split(m)
    return linprog(m.c, A_ub=vstack([m.A[up], -m.A[down]]).tocsr(), b_ub=np.concatenate([m.hi[up], -m.lo[down]]),
                   A_eq=m.A[eq], b_eq=m.hi[eq], bounds=np.column_stack([lb, ub]), method="highs-ds")


def _duals(m: Model, lp) -> tuple[np.ndarray, float]:
    """Reduced costs ``d`` and the dual bound ``L`` after raising degenerate capacity duals (step 1)."""
    eq, up, down = _split(m)
    w = np.zeros(len(m.lo))
    nu = int(up.sum())
    w[up] += lp.ineqlin.marginals[:nu]
    w[down] -= lp.ineqlin.marginals[nu:]
    w[eq] += lp.eqlin.marginals
    d = m.c - m.A.T @ w
    A = m.A
    for r, i in zip(m.cap_rows.tolist(), m.cap_counts.tolist()):
        if w[r] >= 0:
            continue
        s, e = A.indptr[r], A.indptr[r + 1]
        js, a = A.indices[s:e], A.data[s:e]
        pos = a > 0
        step = min(-w[r], float(np.min(np.maximum(d[js[pos]], 0.0) / a[pos], initial=np.inf)))
        if step > 0:
            w[r] += step
            d[js] -= step * a  # flow columns lose, the count (coefficient -1) gains
    d = m.c - m.A.T @ w  # recomputed from w: the bound below is exact for this w
    free_up = ~np.isfinite(m.ub)
    d[free_up] = np.maximum(d[free_up], 0.0)  # rounding noise (~1e-13) on columns without an upper bound
    rows = np.where(w > 0, w * np.where(np.isfinite(m.lo), m.lo, 0.0), w * np.where(np.isfinite(m.hi), m.hi, 0.0))
    cols = np.where(d > 0, d * m.lb, d * np.where(np.isfinite(m.ub), m.ub, 0.0))
    return d, float(rows.sum() + cols.sum())


def _tighten(m: Model, d: np.ndarray, gap: float) -> tuple[np.ndarray, np.ndarray]:
    """Count bounds that every point costing <= L + gap satisfies (step 3)."""
    lb, ub = m.lb.copy(), m.ub.copy()
    k = m.n_int
    lo, hi, dn = m.lb[:k], m.ub[:k], d[:k]
    if m.moves is None:
        cur, du, dd = lo, np.zeros(k), np.zeros(k)
    else:
        cur = m.moves.cur
        du, dd = np.maximum(d[m.moves.up], 0.0), np.maximum(d[m.moves.down], 0.0)
    bound = np.where(dn >= 0, lo, hi)
    c = np.clip(cur, lo, hi)
    fc = dn * (c - bound) + du * np.maximum(c - cur, 0) + dd * np.maximum(cur - c, 0)
    room = gap - fc
    new_lo, new_hi = np.full(k, np.inf), np.full(k, -np.inf)
    for a, b, s in ((c, hi, dn + du), (lo, c, dn - dd)):  # right piece [c, hi], left piece [lo, c]
        # on the piece f(t) = fc + s (t - c) <= gap:  t <= c + room/s (s > 0), t >= c + room/s (s < 0)
        t = c + room / np.where(s == 0, 1.0, s)
        p_lo = np.where(s < 0, np.maximum(a, np.ceil(t - 1e-9)), a)
        p_hi = np.where(s > 0, np.minimum(b, np.floor(t + 1e-9)), b)
        ok = (p_lo <= p_hi) & ((s != 0) | (room >= 0))
        new_lo = np.where(ok, np.minimum(new_lo, p_lo), new_lo)
        new_hi = np.where(ok, np.maximum(new_hi, p_hi), new_hi)
    keep = new_lo <= new_hi  # empty only through rounding: leave such a count alone
    lb[:k] = np.where(keep, np.maximum(lo, new_lo), lo)
    ub[:k] = np.where(keep, np.minimum(hi, new_hi), hi)
    return lb, ub


def _columns(m: Model, nhi: np.ndarray) -> np.ndarray:
    """Columns still usable when the counts with ``nhi == 0`` are held at 0."""
    dead = np.flatnonzero(nhi[:m.n_int] == 0)
    keep = np.ones(len(m.c), dtype=bool)
    if len(dead):
        keep &= ~np.asarray(m.uses[dead].sum(axis=0)).ravel().astype(bool)
    keep[:m.n_int] = True
    return np.flatnonzero(keep)


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
    d, z = _duals(m, lp)
    slack = lambda ub_: ub_ - z + 1e-6 * max(1.0, abs(ub_)) + 1e-9  # noqa: E731
    # Every point costing <= L + g0 lies in the box tighten(g0), so an incumbent outside it cannot be
    # close, and one inside cannot beat r0: incumbents are only the fallback when the box has no plan.
    g0 = RESTRICTED_GAP * max(1.0, abs(z))
    lb0, ub0 = _tighten(m, d, g0)
    cols0 = _columns(m, ub0)
    r0 = _milp(m, lb0, ub0, cols0)
    k = m.n_int
    if r0.x is not None:
        lb1, ub1 = _tighten(m, d, slack(float(r0.fun)))
        if np.all(lb1[:k] >= lb0[:k]) and np.all(ub1[:k] <= ub0[:k]):  # nothing cheaper outside the box
            x = np.zeros(len(m.c))
            x[cols0] = r0.x
            return Solution(x, r0.message, "restricted", z, int(np.sum(lb0[:k] < ub0[:k])))
        ub_cost = float(r0.fun)
    else:
        ub_cost = min((c for c in (_incumbent_cost(m, n) for n in incumbents) if c is not None), default=None)
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
