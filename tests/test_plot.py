"""integrations/weight_figure.py (the weight figure's w(r) against the hand table, colors) and
experiments/plot.py (the three figures of its command line, each beside the run it draws unless
--out-dir names another folder)."""
import shutil

import pytest
import torch

from conftest import ROOT, require
from experiments import plot
from integrations import weight_figure
from test_losses import C, EPS_HIGH, EPS_LOW, HAND, RATIOS


@pytest.mark.parametrize("method,sign,r,want", [
    ("grpo", 1, 1.1, 1.1), ("grpo", 1, 0.5, 0.5), ("grpo", 1, 2.0, 0.0), ("grpo", -1, 0.5, 0.0),
    ("grpo", -1, 2.0, 2.0), ("grpo", -1, 4.0, 0.0),
    ("aspo", 1, 0.5, 2.0), ("aspo", 1, 0.2, 3.0), ("aspo", 1, 1.1, 1 / 1.1), ("aspo", 1, 2.0, 0.0),
    ("aspo", -1, 4.0, 3.0), ("aspo", -1, 0.5, 0.0), ("aspo", -1, 0.9, 0.9),
    ("nois", 1, 0.5, 1.0), ("nois", 1, 2.0, 0.0), ("nois", -1, 2.0, 1.0), ("nois", -1, 4.0, 0.0),
])
def test_weights_known_values(method, sign, r, want):
    w = weight_figure.weights(method, torch.tensor([r], dtype=torch.float64), float(sign))
    assert w.shape == (1,)
    assert w.item() == pytest.approx(want, rel=1e-6, abs=1e-9)


def test_weights_match_the_whole_table():
    rs = torch.tensor(list(RATIOS.values()), dtype=torch.float64)
    for (method, sign), ws in HAND.items():
        got = weight_figure.weights(method, rs, float(sign), eps_low=EPS_LOW, eps_high=EPS_HIGH,
                                    clip_c=C)
        torch.testing.assert_close(got, torch.tensor(ws, dtype=torch.float64), atol=1e-9, rtol=1e-6)
    # the clip constants are passed through: with c = 5, aspo's positive weight at r = 0.25 is 1/r = 4, not c
    for c, w in ((5.0, 4.0), (3.0, 3.0)):
        got = weight_figure.weights("aspo", torch.tensor([0.25]), 1.0, clip_c=c)
        assert got.item() == pytest.approx(w)


def test_colors_any_method_name():
    assert weight_figure.color("aspo") == "tab:blue" and weight_figure.color("grpo") == "tab:red"
    # any other name: a color fixed by the name alone, the same in every process (pinned here, so a
    # colour from Python's per-process salted hash() fails), and different names spread over the
    # palette
    names = ("my/file.py:fn", "posmean", "aspo-ref", "a.py:b")
    assert {name: weight_figure.color(name) for name in names} == {
        "my/file.py:fn": "black", "posmean": "tab:orange", "aspo-ref": "tab:purple",
        "a.py:b": "tab:brown"}


def test_main_draws_each_figure_beside_its_run_or_in_out_dir(tmp_path, capsys):
    require("matplotlib", "drawing the figures")
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(ROOT / "experiments" / "runs" / "demo" / "metrics.jsonl", run)
    assert plot.main(["--metrics", str(run / "metrics.jsonl")]) == 0
    assert (run / "curves.png").stat().st_size > 10_000  # beside the run, not in assets/
    assert plot.main(["--weights", "--tradeoff", str(ROOT / "experiments" / "runs-confirm" / "tradeoff"),
                      "--out-dir", str(tmp_path / "figs")]) == 0
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == ["tradeoff.png", "weights.png"]


def test_main_errors(tmp_path, capsys):
    with pytest.raises(SystemExit):
        plot.main([])  # nothing to draw
    assert "nothing to draw" in capsys.readouterr().err
    require("matplotlib", "drawing the figures")
    assert plot.main(["--tradeoff", str(tmp_path)]) == 1  # no finished runs: one line, exit 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("plot.py: error: ") and "no finished runs" in err[0]


def _dose_root(tmp_path, rungs=("grpo", "aspo", "icepop"), seeds=(0, 1, 2)):
    """A finished dose-ladder arm as runs.py writes it: one summary.json of paired runs."""
    import json
    stale = {"below03_pos": 0.002, "below05_pos": 0.004, "below08_pos": 0.01, "below1_pos": 0.3,
             "clip_high_pos": 0.01}
    runs = [{"method": m, "lag": 8, "seed": s, "initial": {"careful_hard": 0.1}, "stale": stale,
             "final": {"careful_hard": 0.05 + 0.1 * i + 0.01 * s}}
            for s in seeds for i, m in enumerate(rungs)]
    out = tmp_path / "dose" / "ladder" / "s0-2"
    out.mkdir(parents=True)
    (out / "summary.json").write_text(json.dumps({"runs": runs}))
    return tmp_path


def test_dose_figure_draws_the_ladder(tmp_path):
    require("matplotlib", "the dose figure")
    root = _dose_root(tmp_path)
    assert plot.main(["--dose", str(root), "--out-dir", str(tmp_path / "fig")]) == 0
    assert (tmp_path / "fig" / "dose_ladder.png").stat().st_size > 10_000


def test_dose_figure_without_runs_is_a_one_line_error(tmp_path, capsys):
    require("matplotlib", "the dose figure")
    assert plot.main(["--dose", str(tmp_path), "--out-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no finished dose-ladder runs" in err[0]


def test_map_figure_without_runs_is_a_one_line_error(tmp_path, capsys):
    require("matplotlib", "the map figure")
    assert plot.main(["--map", str(tmp_path), "--out-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no finished map runs" in err[0]


def test_map_figure_draws_the_cells_phase_8_ran(tmp_path):
    # phase 8's ladder arm is the map's cell at lag 8 (sampler, mu 32): the figure draws from it alone
    require("matplotlib", "the map figure")
    import json
    root = _dose_root(tmp_path, rungs=("grpo", "aspo", "posmean"))  # posmean: --third's default
    path = root / "dose" / "ladder" / "s0-2" / "summary.json"
    summary = json.loads(path.read_text())
    for run in summary["runs"]:
        run["stale"]["drift"] = 0.27
    path.write_text(json.dumps(summary))
    assert plot.main(["--map", str(root), "--out-dir", str(tmp_path / "fig")]) == 0
    assert (tmp_path / "fig" / "stale_map.png").stat().st_size > 10_000
