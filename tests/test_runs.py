import json

import numpy as np
import pytest

from experiments import runs


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
    g = runs.frontier_gap(suite, ["aspo@2"], ["grpo@2", "grpo@1"])
    assert g["seeds"] == [0, 1, 2] and g["diffs"] == pytest.approx([0.01, 0.02, 0.03])
    assert g["mean"] == pytest.approx(0.02) and g["wins"] == 3
    assert g["ci95"][0] <= 0.02 <= g["ci95"][1]
    # a baseline that lies above the method: a negative gap
    lower = runs.frontier_gap(suite, ["grpo@1"], ["grpo@2"])
    assert lower["diffs"] == pytest.approx([-0.05] * 3) and lower["wins"] == 0
    # frontier against frontier: the best of several on each side
    assert runs.frontier_gap(suite, ["grpo@1", "aspo@2"], ["grpo@2"])["diffs"] == pytest.approx([0.01, 0.02, 0.03])


def test_frontier_is_the_best_y_at_or_above_each_x_whatever_the_order_in_time():
    # entropy falls, rises, falls again (an escape from a shortcut): the frontier ignores the order
    path = [{"x": 0.16, "y": 0.53}, {"x": 0.10, "y": 0.55}, {"x": 0.14, "y": 0.80}, {"x": 0.06, "y": 0.85},
            {"x": 0.05, "y": 0.70}]
    grid = np.array([0.16, 0.14, 0.12, 0.10, 0.06, 0.05, 0.0])
    assert runs.frontier([path], "x", "y", grid).tolist() == [0.53, 0.80, 0.80, 0.80, 0.85, 0.85, 0.85]
    # several runs: the frontier of all their evaluations
    other = [{"x": 0.16, "y": 0.60}, {"x": 0.05, "y": 0.90}]
    assert runs.frontier([path, other], "x", "y", grid).tolist() == [0.60, 0.80, 0.80, 0.80, 0.85, 0.90, 0.90]


def test_frontier_gap_grid_spans_where_both_frontiers_are_defined():
    a = _run("aspo@1", 0, [1.0, 0.5], [0.0, 0.5])
    b = _run("grpo@1", 0, [0.5, 0.0], [0.5, 1.0])
    # grid [0, 0.5] (the lowest x of any run to the highest x every run reached): a's frontier is 0.5
    # everywhere there, b's is 1.0 at x = 0 and 0.5 above it
    g = runs.frontier_gap([a, b], ["aspo@1"], ["grpo@1"])
    assert g["seeds"] == [0] and g["diffs"] == pytest.approx([-0.5 / 50])
    assert runs.frontier_gap([a], ["aspo@1"], ["grpo@1"])["mean"] is None  # no baseline run: no seed
    assert runs.fmt(runs.frontier_gap([a], ["aspo@1"], ["grpo@1"])) == "n/a"


def test_tradeoff_suite_end_to_end_is_resumable_and_reports(tmp_path, tiny_args, capsys):
    argv = ["tradeoff", "--seeds", "4", "--root", str(tmp_path), "--parallel", "2", "--",
            *tiny_args, "--steps", "2", "--eval-every", "1", "--lr", "1e-2"]
    assert runs.main(argv) == 0
    out = capsys.readouterr().out
    done = sorted(p.parent.parent.name for p in (tmp_path / "tradeoff").glob("*/s4/summary.json"))
    assert done == ["aspo@0.0025", "aspo@0.005", "aspo@0.01", "grpo@0.0025", "grpo@0.005", "grpo@0.01"]
    assert out.count("done ") == 7  # the checkpoint's start run and the six runs
    suite = runs.load_suite(tmp_path / "tradeoff")
    assert len(suite) == 6 and all(len(r["path"]) == 3 for r in suite)  # step 0 and two evaluations
    # one shared checkpoint: every run starts from the same held-out numbers
    assert len({json.dumps(r["initial"], sort_keys=True) for r in suite}) == 1
    report = (tmp_path / "report.md").read_text()
    assert "aspo@0.01 - grpo@0.01, pass@1" in report and "pace-free" in report
    assert runs.main(argv) == 0  # again: everything is skipped
    assert capsys.readouterr().out.count("skip ") == 7
    # the suite's own flags win over the same flags after --: every run kept its seed, method and lr
    for r in suite:
        assert r["seed"] == 4 and r["method"].split("@")[0] in ("grpo", "aspo")
    ckpt_start = json.loads((tmp_path / "ckpt-start" / "summary.json").read_text())
    assert ckpt_start["config"]["steps"] == 0 and ckpt_start["runs"] == []  # not the --steps 2 after --
    # another setting after -- is another experiment: nothing is skipped
    assert runs.main(argv + ["--eval-samples", "3"]) == 0
    assert capsys.readouterr().out.count("done ") == 7


def test_bad_arguments_are_one_line_errors(tmp_path, capsys):
    assert runs.main(["tradeoff", "--seeds", "a", "--root", str(tmp_path)]) == 2
    assert runs.main(["tradeoff", "--root", str(tmp_path), "--", "--lr", "-1"]) == 2
    err = capsys.readouterr().err.strip().split("\n")
    assert len(err) == 2 and all(e.startswith("runs.py: error:") for e in err) and "--lr" in err[1]
