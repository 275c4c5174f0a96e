"""Statistics only the experiments use (the core's are stats.py): the Pareto frontiers of the
pace-free test (§6) and how a start's strategies compare with what its teacher allows."""
import numpy as np

from stats import bootstrap_ci
from stats import start_line as held_out_line

def frontier(paths: list[list[dict]], x: str, y: str, grid: np.ndarray) -> np.ndarray:
    """The Pareto frontier of the evaluations of `paths` (one run or several): at each grid value g,
    the best y among the evaluations whose x is at least g (e.g. the best pass@1 reached while
    entropy was still >= g). It ignores the order in time, so a path that falls, rises and falls
    again in x is handled; it is non-increasing in g."""
    px = np.array([p[x] for path in paths for p in path])
    py = np.array([p[y] for path in paths for p in path])
    return np.array([py[px >= g].max() for g in grid])


def frontier_gap(runs: list[dict], methods: list[str], baselines: list[str], x: str = "eval_entropy",
                 y: str = "eval_pass@1", grid: int = 50) -> dict:
    """The pace-free test (§6), per seed: the mean over a grid of x (held-out entropy) of the frontier
    of `methods`' evaluations minus the frontier of `baselines`' (e.g. one ASPO run against GRPO at
    every learning rate): more y at equal or higher x. The grid runs from the lowest x any of these
    runs reached to the highest x every one of them reached, where both frontiers are defined. The
    frontier of several noisy runs is biased upwards, so compare one run against several only beside
    the same number on each side (frontier against frontier). runs carry their held-out `path`."""
    by = {(r["method"], r["seed"]): r["path"] for r in runs}
    gaps = {}
    for seed in sorted({s for (m, s) in by if m == methods[0]}):
        left, right = ([by.get((m, seed)) for m in side] for side in (methods, baselines))
        if any(p is None for p in left + right):
            continue
        lo = min(p[x] for path in left + right for p in path)
        hi = min(max(p[x] for p in path) for path in left + right)
        xs = np.linspace(lo, hi, grid)
        gaps[seed] = float((frontier(left, x, y, xs) - frontier(right, x, y, xs)).mean())
    diffs = np.array(list(gaps.values()))
    return {"methods": methods, "baselines": baselines, "x": x, "y": y, "seeds": list(gaps), "diffs": diffs.tolist(),
            "mean": float(diffs.mean()) if len(diffs) else None, "ci95": bootstrap_ci(diffs),
            "wins": int((diffs > 0).sum())}


TEACHER_TOLERANCE = 0.02  # each strategy's accuracy within this of the teacher's (experiments/README.md phase 5)
STRATEGY_KEYS = ("careful_acc_easy", "careful_acc_hard", "shortcut_acc_easy", "shortcut_acc_hard")


def teacher_gaps(start: dict, teacher: dict) -> dict:
    """Each strategy's accuracy (marker given) minus the teacher's own, for the keys of STRATEGY_KEYS.
    The start is set by the teacher when every gap is within TEACHER_TOLERANCE, either way: a model
    sharper than its teacher is not at the cross-entropy optimum either (phase 5)."""
    return {key: start[key] - teacher[key] for key in STRATEGY_KEYS
            if start.get(key) is not None and teacher.get(key) is not None}  # None: no problem of that kind


def start_line(start: dict, k: int) -> str:
    """The start's held-out numbers (summary.json's "start") on one line, and on a second line how often
    the careful strategy is chosen on hard problems and how well each strategy is known (marker given)."""
    line = held_out_line(start, k)
    if "careful_acc_easy" in start:  # None where the held-out set has no problem of that kind
        acc = {key: "-" if start[key] is None else f"{start[key]:.3f}" for key in STRATEGY_KEYS}
        line += (f"\n  marker given: careful right on easy {acc['careful_acc_easy']}, hard {acc['careful_acc_hard']}; "
                 f"shortcut right on easy {acc['shortcut_acc_easy']}, hard {acc['shortcut_acc_hard']}")
    if "teacher" in start and None not in (start["teacher"][key] for key in STRATEGY_KEYS):
        # what the teacher's noise allows, and whether this start has got there
        t, gaps = start["teacher"], teacher_gaps(start, start["teacher"])
        worst = max(gaps, key=lambda key: abs(gaps[key]))
        line += (f"\n  the teacher's own: careful {t['careful_acc_easy']:.3f}, {t['careful_acc_hard']:.3f}  shortcut "
                 f"{t['shortcut_acc_easy']:.3f}, {t['shortcut_acc_hard']:.3f}; largest gap {gaps[worst]:+.3f} ({worst}): "
                 + ("set by the teacher" if abs(gaps[worst]) <= TEACHER_TOLERANCE else
                    f"NOT within {TEACHER_TOLERANCE} of the teacher ("
                    + ("sharper than it" if gaps[worst] > 0 else "short of it: pretraining has not converged") + ")"))
    return line
