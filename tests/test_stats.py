"""stats.py and experiments/stats.py: bootstrap errors and intervals, the paired comparison and its one-line form, the
Pareto frontier and the pace-free frontier gap (§6), and the start and closing lines."""
import numpy as np
import pytest

import stats
from experiments import stats as exp_stats


def _run(method, seed, xs, ys, final=None):
    path = [{"eval_entropy": x, "eval_pass@1": y, "eval_pass@8": min(1.0, y + 0.2)} for x, y in zip(xs, ys)]
    return {"method": method, "seed": seed, "path": path, "final": final or {"pass@1": ys[-1]}}


def test_frontier_gap_is_the_mean_distance_above_the_best_baseline_on_the_shared_range():
    xs = [1.0, 0.8, 0.6, 0.4, 0.2]
    suite = []
    for seed in (0, 1, 2):
        suite.append(_run("grpo@2", seed, xs, [0.5 - x / 2 for x in xs]))
        suite.append(_run("grpo@1", seed, xs, [0.45 - x / 2 for x in xs]))  # below grpo@2 everywhere
        suite.append(_run("aspo@2", seed, xs[::-1], [0.5 - x / 2 + 0.01 * (seed + 1) for x in xs[::-1]]))
    g = exp_stats.frontier_gap(suite, ["aspo@2"], ["grpo@2", "grpo@1"])
    assert g["seeds"] == [0, 1, 2] and g["diffs"] == pytest.approx([0.01, 0.02, 0.03])
    assert g["mean"] == pytest.approx(0.02) and g["wins"] == 3
    assert g["ci95"][0] <= 0.02 <= g["ci95"][1]
    # a baseline that lies above the method: a negative gap
    lower = exp_stats.frontier_gap(suite, ["grpo@1"], ["grpo@2"])
    assert lower["diffs"] == pytest.approx([-0.05] * 3) and lower["wins"] == 0
    # frontier against frontier: the best of several on each side
    assert exp_stats.frontier_gap(suite, ["grpo@1", "aspo@2"], ["grpo@2"])["diffs"] == pytest.approx([0.01, 0.02, 0.03])


def test_frontier_is_the_best_y_at_or_above_each_x_whatever_the_order_in_time():
    # entropy falls, rises, falls again (an escape from a shortcut): the frontier ignores the order
    path = [{"x": 0.16, "y": 0.53}, {"x": 0.10, "y": 0.55}, {"x": 0.14, "y": 0.80}, {"x": 0.06, "y": 0.85},
            {"x": 0.05, "y": 0.70}]
    grid = np.array([0.16, 0.14, 0.12, 0.10, 0.06, 0.05, 0.0])
    assert exp_stats.frontier([path], "x", "y", grid).tolist() == [0.53, 0.80, 0.80, 0.80, 0.85, 0.85, 0.85]
    # several runs: the frontier of all their evaluations
    other = [{"x": 0.16, "y": 0.60}, {"x": 0.05, "y": 0.90}]
    assert exp_stats.frontier([path, other], "x", "y", grid).tolist() == [0.60, 0.80, 0.80, 0.80, 0.85, 0.90, 0.90]


def test_frontier_gap_grid_spans_where_both_frontiers_are_defined():
    a = _run("aspo@1", 0, [1.0, 0.5], [0.0, 0.5])
    b = _run("grpo@1", 0, [0.5, 0.0], [0.5, 1.0])
    # grid [0, 0.5] (the lowest x of any run to the highest x every run reached): a's frontier is 0.5
    # everywhere there, b's is 1.0 at x = 0 and 0.5 above it
    g = exp_stats.frontier_gap([a, b], ["aspo@1"], ["grpo@1"])
    assert g["seeds"] == [0] and g["diffs"] == pytest.approx([-0.5 / 50])
    assert exp_stats.frontier_gap([a], ["aspo@1"], ["grpo@1"])["mean"] is None  # no baseline run: no seed
    assert stats.paired_line(exp_stats.frontier_gap([a], ["aspo@1"], ["grpo@1"]), 8, label=False) == "n/a"


def test_paired_comparison_differences_interval_and_wins():
    def run(method, seed, p1, ent):
        return {"method": method, "seed": seed, "final": {"pass@1": p1, "entropy": ent, "pass@k": p1 + 0.1}}
    runs = [run("grpo", s, 0.5, 0.2) for s in range(8)] + [run("aspo", s, 0.5 + 0.01 * (s - 2), 0.3) for s in range(8)]
    runs.append(run("aspo", 99, 0.9, 0.9))  # no grpo partner: not paired, left out
    comp = {c["metric"]: c for c in stats.paired_comparison(runs)}
    assert set(comp) == {"entropy", "pass@1", "pass@k"}
    c = comp["pass@1"]
    assert c["method"] == "aspo" and c["baseline"] == "grpo" and c["seeds"] == list(range(8))
    assert c["diffs"] == pytest.approx([0.01 * (s - 2) for s in range(8)])
    assert c["mean"] == pytest.approx(0.015) and c["wins"] == 5  # seeds 3..7
    assert c["ci95"][0] < c["mean"] < c["ci95"][1] and c["ci95"][0] >= min(c["diffs"]) and c["ci95"][1] <= max(c["diffs"])
    assert comp["entropy"]["ci95"] == pytest.approx([0.1, 0.1]) and comp["entropy"]["wins"] == 8
    one = stats.paired_comparison(runs[:1] + runs[8:9])
    assert one[0]["ci95"] is None and one[0]["seeds"] == [0]


def test_paired_line_and_start_and_summary_lines():
    c = {"method": "aspo", "baseline": "grpo", "metric": "pass@k", "seeds": [0, 1], "mean": 0.012,
         "ci95": [-0.02, 0.041], "wins": 1}
    assert stats.paired_line(c, 8) == "aspo - grpo, pass@8: +0.012 [-0.020, +0.041], 1/2 seeds > 0"
    assert stats.paired_line(dict(c, ci95=None), 8, label=False) == "+0.012 (no interval), 1/2 seeds > 0"
    start = {"n_problems": 8, "pass@1": 0.5, "pass@1_se": 0.1, "pass@k": 0.75, "pass@k_se": 0.05, "entropy": 0.3}
    line = stats.start_line(start, 4)
    assert line.startswith("start (held-out, 8 problems): pass@1 0.500 +- 0.100") and "pass@4 0.750" in line
    runs = [{"method": m, "seed": 0, "final": start | {"pass@1": p}} for m, p in (("grpo", 0.5), ("aspo", 0.6))]
    lines = stats.summary_lines(start, runs, stats.compare(runs), 4)
    assert lines[0] == line and lines[2].startswith("grpo") and lines[3].startswith("aspo")
    assert "  aspo - grpo, pass@1: +0.100 (no interval), 1/1 seeds > 0" in lines
    assert stats.summary_lines(start, [], stats.compare([]), 4) == [line]
    # one seed: the hint to run more seeds, and no "1 seeds" sentence about an interval it lacks
    assert any("use --seeds 0,1,...,7" in ln for ln in lines)
    assert not any("seeds cannot tell" in ln for ln in lines)
    runs2 = runs + [dict(r, seed=1) for r in runs]
    assert any(ln.startswith("  (2 seeds: an interval") for ln in
               stats.summary_lines(start, runs2, stats.compare(runs2), 4))


def test_bootstrap_se_and_ci():
    assert stats.bootstrap_se([0.7] * 10) == pytest.approx(0.0, abs=1e-12)
    x = np.random.default_rng(0).normal(size=400)
    assert stats.bootstrap_se(x) == pytest.approx(x.std() / 20, rel=0.15)  # sigma / sqrt(n)
    assert stats.bootstrap_ci([0.1]) is None
    lo, hi = stats.bootstrap_ci([0.0, 1.0, 2.0, 3.0])
    assert 0.0 <= lo < 1.5 < hi <= 3.0
