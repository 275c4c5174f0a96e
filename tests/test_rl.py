import json
import math
import time

import pytest
import torch

import batched
import nano_aspo as na
from model import GPT
import rewards


def _cfg(**kw):
    base = dict(n_layer=1, n_embd=16, n_head=2, prompts=4, group=4, minibatches=2, epochs=2, lr=1e-2)
    base.update(kw)
    return na.Config(**base)


def _alternating_score(monkeypatch):
    """Reward every other completion: each group of 4 gets 2 right and 2 wrong (no dead groups, both signs)."""
    calls = []

    def fake(problem, completion):
        calls.append(completion)
        return float(len(calls) % 2)

    monkeypatch.setattr(na, "score", fake)
    return calls


def _model(cfg, seed=0):
    """A one-member batched model: the RL step trains members (batched.py), one here."""
    torch.manual_seed(seed)
    return batched.StackedGPT(na.model_config(cfg), [GPT(na.model_config(cfg))])


def _step(model, opt, problems, cfg, method, gen):
    """rl_step of one run: its metrics and the timings."""
    ms, t = na.rl_step(model, opt, [problems], cfg, [method], [gen])
    return ms[0], t


@pytest.mark.parametrize("method", na.METHODS)
def test_rl_step_runs_and_reports_finite_metrics(method, monkeypatch):
    calls = _alternating_score(monkeypatch)
    cfg = _cfg()
    model = _model(cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt_ = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    problems = rewards.make_problems(cfg.prompts, 0, "train")
    m, t = _step(model, opt_, problems, cfg, method, torch.Generator().manual_seed(0))
    assert len(calls) == cfg.prompts * cfg.group
    for key in ("reward", "entropy", "dead_groups", "distinct", "grad_norm", "abs_log_ratio", "clip_high_pos",
                "clip_high_neg", "clip_low_pos", "clip_low_neg", "clip_dual_pos", "clip_dual_neg", "below1_pos",
                "last_abs_log_ratio"):
        assert key in m, key
    assert all(isinstance(v, float) and math.isfinite(v) for v in m.values()), m
    assert m["reward"] == 0.5 and m["dead_groups"] == 0.0
    assert m["entropy"] > 0 and 1 <= m["distinct"] <= cfg.group
    assert all(0 <= m[k] <= 1 for k in m if k.startswith(("clip_", "below1_")))
    # mu = 4 updates at a high lr: the policy moved off the rollout policy by the last minibatch
    assert m["last_abs_log_ratio"] > 0 and m["abs_log_ratio"] > 0
    assert not all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_rl_step_times_the_rollout_and_the_update_apart(monkeypatch):
    # a rollout made 0.3 s slower shows in rollout_s, not in update_s, and the two split the
    # step's time
    _alternating_score(monkeypatch)
    rollout = na.rollout_and_score
    slow = lambda *a, **k: (time.sleep(0.3), rollout(*a, **k))[1]
    monkeypatch.setattr(na, "rollout_and_score", slow)
    cfg = _cfg()
    model = _model(cfg)
    opt_ = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    t0 = time.perf_counter()
    _, t = _step(model, opt_, rewards.make_problems(cfg.prompts, 0, "train"), cfg, "aspo",
                 torch.Generator().manual_seed(0))
    wall = time.perf_counter() - t0
    assert t.keys() == {"rollout_s", "update_s"}
    assert t["rollout_s"] >= 0.3 and 0 < t["update_s"] <= wall - 0.3
    assert t["rollout_s"] + t["update_s"] <= wall + 0.01  # time.time() inside, perf_counter here


def test_rl_step_dead_groups_give_no_update(monkeypatch):
    monkeypatch.setattr(na, "score", lambda p, c: 1.0)  # every group all-correct: A = 0 everywhere
    cfg = _cfg()
    model = _model(cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt_ = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    m, _ = _step(model, opt_, rewards.make_problems(cfg.prompts, 0, "train"), cfg, "aspo",
                      torch.Generator().manual_seed(0))
    assert m["dead_groups"] == 1.0 and m["reward"] == 1.0 and m["grad_norm"] == 0.0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert "clip_high_pos" not in m and "clip_high_neg" not in m  # no token has a sign


def _count_steps(cfg, monkeypatch):
    _alternating_score(monkeypatch)
    model = _model(cfg)
    opt_ = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    n = []
    step = opt_.step
    monkeypatch.setattr(opt_, "step", lambda *a, **k: (n.append(1), step(*a, **k))[1])
    _step(model, opt_, rewards.make_problems(cfg.prompts, 0, "train"), cfg, "grpo",
               torch.Generator().manual_seed(0))
    return len(n)


def test_rl_step_makes_mu_optimizer_steps(monkeypatch):
    cfg = _cfg(minibatches=4, epochs=2)  # 16 rows in 4 minibatches
    assert _count_steps(cfg, monkeypatch) == cfg.mu == 8


def test_rl_step_makes_mu_optimizer_steps_when_rows_do_not_divide(monkeypatch):
    # 3 prompts x 2 = 6 rows, --minibatches 4 (valid: 4 <= 6): the help promises 4 optimizer steps per epoch
    cfg = _cfg(prompts=3, group=2, minibatches=4, epochs=1)
    cfg.validate()
    assert _count_steps(cfg, monkeypatch) == cfg.mu == 4


# --- the full program ---------------------------------------------------------------------------------
def _run_main(tiny_args, out, *extra):
    argv = tiny_args + ["--steps", "2", "--eval-every", "1", "--quiet", "--out-dir", str(out), "--seeds", "3",
                        "--methods", "grpo,aspo,nois", *extra]
    return na.main(argv)


def _read(out):
    lines = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((out / "summary.json").read_text())
    return lines, summary


def test_main_end_to_end_writes_metrics_and_summary_and_is_deterministic(tmp_path, tiny_args, capsys):
    out = tmp_path / "run"
    assert _run_main(tiny_args, out) == 0
    cap = capsys.readouterr()
    assert cap.err == ""
    lines, summary = _read(out)
    assert lines
    for d in lines:
        assert {"method", "seed", "step"} <= d.keys()
        assert d["seed"] == 3 and d["method"] in na.METHODS
    for method in ("grpo", "aspo", "nois"):
        steps = [d["step"] for d in lines if d["method"] == method]
        assert steps == [0, 1, 2], (method, steps)
        step2 = next(d for d in lines if d["method"] == method and d["step"] == 2)
        for key in ("reward", "entropy", "dead_groups", "abs_log_ratio", "eval_pass@1", "eval_pass@2", "eval_entropy"):
            assert math.isfinite(step2[key]), key
    assert summary["pretrain_s"] > 0 and summary["checkpoint"].startswith(str(out))
    runs = summary["runs"]
    assert [(r["method"], r["seed"]) for r in runs] == [("grpo", 3), ("aspo", 3), ("nois", 3)]
    for r in runs:
        assert "error" not in r
        for when in ("initial", "final"):
            h = r[when]
            assert {"entropy", "pass@1", "pass@k", "k", "dead_groups"} <= h.keys()
            assert h["k"] == 2
            assert 0 <= h["pass@1"] <= h["pass@k"] <= 1 and 0 <= h["dead_groups"] <= 1 and h["entropy"] >= 0
    # every method starts from the same checkpoint and is evaluated on the same draws
    assert runs[0]["initial"] == runs[1]["initial"] == runs[2]["initial"]

    # the same command again (now loading the cached checkpoint) gives the same numbers
    assert _run_main(tiny_args, out) == 0
    lines2, summary2 = _read(out)
    assert summary2["pretrain_s"] == 0.0
    strip = lambda rs: [{k: v for k, v in r.items() if k != "timings"} for r in rs]
    assert strip(summary2["runs"]) == strip(runs)
    assert summary2["config"] == summary["config"]
    assert lines2 == lines


def test_main_stops_a_run_on_a_nan_loss(tmp_path, tiny_args, capsys, monkeypatch):
    def nan_loss(method, logp, *a, **k):
        return (logp * float("nan")).sum(), {}

    monkeypatch.setattr(na, "policy_loss", nan_loss)
    out = tmp_path / "nan"
    rc = na.main(tiny_args + ["--steps", "3", "--quiet", "--out-dir", str(out), "--seeds", "3", "--methods", "grpo"])
    assert rc != 0
    err = capsys.readouterr().err.strip("\n").split("\n")
    assert len(err) == 1, err
    assert "step 1" in err[0] and "grpo" in err[0]
    assert (out / "metrics.jsonl").exists()
    lines, summary = _read(out)
    assert [d["step"] for d in lines] == [0]
    assert "error" in summary["runs"][0] and summary["runs"][0]["final"] is None


def numbers(x) -> list[float]:
    """Every number in nested dicts and lists, in order (strings, None and booleans left out)."""
    if isinstance(x, dict):
        x = list(x.values())
    if isinstance(x, list):
        return [v for item in x for v in numbers(item)]
    return [x] if isinstance(x, (int, float)) and not isinstance(x, bool) else []


def gap(a, b) -> float:
    """The largest |difference| between the numbers of two metrics structures of the same shape."""
    xs, ys = numbers(a), numbers(b)
    assert len(xs) == len(ys) > 0
    return max(abs(x - y) for x, y in zip(xs, ys))


def test_mu_one_control_every_method_gives_the_same_run(tmp_path, tiny_args, monkeypatch):
    # one minibatch, one epoch: every update is on-policy (r = 1 up to rounding), where all the
    # losses have the same gradient (§2), so every method must produce the same run within 1e-6
    # (§10's negative control; the losses' formulas round differently, so not bit for bit)
    _alternating_score(monkeypatch)  # half of every group right: a learning signal in every batch
    out = tmp_path / "mu1"
    assert na.main(tiny_args + ["--steps", "3", "--eval-every", "1", "--quiet", "--out-dir", str(out), "--seeds", "5",
                                "--minibatches", "1", "--epochs", "1", "--lr", "1e-2",
                                "--methods", ",".join(na.METHODS)]) == 0
    lines, summary = _read(out)
    by = {}
    for d in lines:
        by.setdefault(d.pop("method"), []).append(d)
    runs = list(by.values())
    assert len(runs) == len(na.METHODS) and all(len(r) == 4 for r in runs)
    for other in runs[1:]:
        assert [line.keys() for line in other] == [line.keys() for line in runs[0]]
        assert gap(other, runs[0]) < 1e-6
    assert runs[0][-1]["grad_norm"] > 0  # the updates really happened
    # and the opposite: with mu = 4 the same seeds give different runs (the control can fail)
    out4 = tmp_path / "mu4"
    assert na.main(tiny_args + ["--steps", "3", "--quiet", "--out-dir", str(out4), "--seeds", "5", "--lr", "1e-2",
                                "--minibatches", "2", "--epochs", "2", "--methods", "grpo,aspo"]) == 0
    finals = [r["final"] for r in _read(out4)[1]["runs"]]
    assert gap([finals[0]], [finals[1]]) > 1e-3


def test_steps_zero_evaluates_the_start_only(tmp_path, tiny_args, capsys):
    out = tmp_path / "start"
    assert na.main(tiny_args + ["--steps", "0", "--quiet", "--out-dir", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    start = summary["start"]
    assert {"entropy", "pass@1", "pass@k", "k", "n_problems", "pass@1_se", "pass@k_se"} <= start.keys()
    assert start["k"] == 2 and start["n_problems"] == 8 and 0 <= start["pass@1"] <= start["pass@k"] <= 1
    assert summary["runs"] == [] and summary["comparison"] == []
    assert "start" in capsys.readouterr().out
