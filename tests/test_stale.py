"""Stale rollouts (ASPO.md §12): --rollout-lag, --ratio-anchor sampler|decoupled, --behaviour-cap.
Lag 0 is the on-policy run under both anchors; at L > 0 each member samples with its own weights
of L steps before (the start until then); the sampler anchor takes the ratio against those weights'
log-probs, the decoupled one against today's old log-probs times a truncated behaviour weight."""
import json
import math

import pytest
import torch

import batched
import nano_aspo as na
import stats
from model import GPT
from test_check_loss import PLUGIN
from test_rl import _alternating_score, _cfg, _model
import rewards


def _run(tmp_path, tiny_args, name, *flags):
    """A tiny run whose groups all learn (every other completion rewarded: both signs of A)."""
    out = tmp_path / name
    with pytest.MonkeyPatch.context() as mp:
        _alternating_score(mp)
        assert na.main([*tiny_args, "--quiet", "--steps", "4", "--eval-every", "2", "--lr", "1e-2",
                        "--out-dir", str(out), *flags]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return rows, json.loads((out / "summary.json").read_text())


def _numbers(rows, lag=None):
    """Every logged number of the rows of one lag, keyed by (method, seed, step, metric)."""
    return {(r["method"], r["seed"], r["step"], k): v for r in rows if lag is None or
            r["lag"] == lag for k, v in r.items() if isinstance(v, float)}


@pytest.mark.parametrize("kl", ["0", "0.05"])
def test_lag_zero_is_the_on_policy_run_under_both_anchors_and_beside_a_stale_lag(tmp_path,
                                                                                  tiny_args, kl):
    """Number for number. Beside a stale lag every member has a behaviour model and, under the
    decoupled anchor, goes through anchor(); the lag-0 ones must still be the on-policy run."""
    flags = ["--seeds", "0,1", "--methods", "grpo,aspo", "--kl-coef", kl]
    on_policy, _ = _run(tmp_path, tiny_args, "s", *flags)
    decoupled, _ = _run(tmp_path, tiny_args, "d", *flags, "--ratio-anchor", "decoupled")
    mixed = {anchor: _run(tmp_path, tiny_args, anchor, *flags, "--rollout-lag", "0,2",
                          "--ratio-anchor", anchor)[0] for anchor in ("sampler", "decoupled")}
    assert _numbers(on_policy) == _numbers(decoupled)  # no behaviour weight at all on-policy
    for rows in mixed.values():  # the stale members do not touch the others
        assert _numbers(on_policy) == _numbers(rows, lag=0)
        assert any(r["drift"] > 0 and r["ess"] < 1 for r in rows if r["lag"] == 2 and r["step"])
    assert all(r["drift"] == 0.0 and r["ess"] == 1.0 for r in on_policy if r["step"] > 0)
    assert _numbers(mixed["sampler"], lag=2) != _numbers(mixed["decoupled"], lag=2)


@pytest.mark.parametrize("anchor", ["sampler", "decoupled"])
def test_batched_equals_one_at_a_time_with_members_of_different_lags(tmp_path, tiny_args, anchor):
    """Every logged number of every step: lag 2 samples the start until step 3, so step 1 alone
    would not see a stale sampler; lags 0, 1 and 2 in one batched model pick their own weights."""
    flags = ["--seeds", "0,1", "--methods", "grpo,aspo", "--rollout-lag", "0,1,2",
             "--ratio-anchor", anchor, "--kl-coef", "0.05"]
    together, _ = _run(tmp_path, tiny_args, "b", *flags)
    alone, _ = _run(tmp_path, tiny_args, "a", *flags, "--no-batch-seeds")
    a, b = ({(r["lag"], *key): v for r in rows for key, v in _numbers([r]).items()}
            for rows in (together, alone))
    assert a.keys() == b.keys() and {k[3] for k in a} == {0, 1, 2, 3, 4}
    off = {k: abs(a[k] - b[k]) for k in a if not math.isclose(a[k], b[k], abs_tol=1e-5)}
    assert not off, sorted(off.items(), key=lambda kv: -kv[1])[:5]
    assert all(any(r.get("drift", 0) > 0 for r in together if r["lag"] == lag) for lag in (1, 2))


@pytest.mark.parametrize("lag", [1, 3])
def test_each_member_samples_with_its_weights_of_lag_steps_before(tmp_path, tiny_args,
                                                                  monkeypatch, lag):
    """behaviour at step t = the weights after step t-1-L (the start while t <= L+1), and under
    the sampler anchor the old log-probs are those weights' log-probs (a recompute)."""
    seen, real_step, real_anchor = [], na.rl_step, na.anchor

    def spy_step(model, optimizer, prompts, cfg, methods, gens, reference=None, behaviour=None,
                 lags=None):
        seen.append((batched.snapshot(model), batched.snapshot(behaviour)))
        return real_step(model, optimizer, prompts, cfg, methods, gens, reference, behaviour, lags)

    anchored = []

    def spy_anchor(prox_logp, behaviour_logp, cfg):
        old, w_b = real_anchor(prox_logp, behaviour_logp, cfg)
        anchored.append((old, behaviour_logp, w_b))
        return old, w_b

    monkeypatch.setattr(na, "rl_step", spy_step)
    monkeypatch.setattr(na, "anchor", spy_anchor)
    _run(tmp_path, tiny_args, "o", "--seeds", "0", "--methods", "grpo", "--rollout-lag", str(lag))
    start = seen[0][0]
    for t, (_, behaviour) in enumerate(seen, start=1):
        want = start if t <= lag + 1 else seen[t - 1 - lag][0]  # the model before step t-L
        assert all(torch.equal(behaviour[k], want[k]) for k in want), t
    assert all(old is beh and w_b is None for old, beh, w_b in anchored)
    assert not all(torch.equal(seen[-1][0][k], seen[-1][1][k]) for k in start)  # truly stale


def test_the_sampler_anchor_recomputes_the_stale_weights_log_probs(monkeypatch):
    """rl_step with a behaviour model: the ratio's old log-probs are token_logps of the stale
    weights on the batch they sampled (not the sampler's own, not the current weights')."""
    _alternating_score(monkeypatch)
    cfg = _cfg(ratio_anchor="sampler")
    model, stale = _model(cfg, seed=0), _model(cfg, seed=1)
    rolls, olds = [], []
    real_rollout, real_loss = na.rollout_and_score, na.policy_loss
    monkeypatch.setattr(na, "rollout_and_score", lambda *a: rolls.append(real_rollout(*a))
                        or rolls[-1])
    monkeypatch.setattr(na, "policy_loss", lambda method, logp, old, *a, **k: olds.append(old)
                        or real_loss(method, logp, old, *a, **k))
    problems = rewards.make_problems(cfg.prompts, 0, "train")
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    na.rl_step(model, opt, [problems], cfg, ["grpo"], [torch.Generator().manual_seed(0)],
               behaviour=stale)
    roll = rolls[0][1]
    every = torch.arange(len(roll.tokens))
    want = na.token_logps(stale, roll, every, cfg.temperature)[0]  # (B, T)
    first = olds[0][0]  # the first minibatch's old log-probs, member 0
    assert any(torch.allclose(first[i], want[j]) for i in range(len(first))
               for j in range(len(want)))
    assert all(any(torch.allclose(row, w) for w in want) for row in first)


def test_mu_one_decoupled_is_the_same_run_for_grpo_and_aspo_sampler_is_not(tmp_path,
                                                                             tiny_args):
    """Every logged step. One update per batch: under the decoupled anchor u = 1, so grpo and aspo
    take one gradient (times the same w_b) at every step, and no positive token has u < 0.8. Under
    the sampler anchor at lag 2, step 1 samples with the weights being trained (r = 1: the same
    step), but from step 2 on r = pi_theta / pi_start != 1 and the two gradients differ."""
    flags = ["--seeds", "0", "--methods", "grpo,aspo", "--rollout-lag", "2", "--minibatches", "1",
             "--epochs", "1", "--lr", "5e-2"]
    decoupled, _ = _run(tmp_path, tiny_args, "d", *flags, "--ratio-anchor", "decoupled")
    sampler, _ = _run(tmp_path, tiny_args, "s", *flags)

    def by_step(rows):  # step -> (grpo's numbers, aspo's numbers)
        n = _numbers(rows)
        return {step: tuple({k[3]: v for k, v in n.items() if k[:3] == (m, 0, step)}
                            for m in ("grpo", "aspo")) for step in range(5)}

    def same(g, a):
        return g.keys() == a.keys() and all(math.isclose(g[k], a[k], abs_tol=1e-6) for k in g)

    d, s = by_step(decoupled), by_step(sampler)
    assert all(same(*d[step]) for step in d), [step for step in d if not same(*d[step])]
    assert all(r["below08_pos"] == 0 for r in decoupled if r["step"])  # u, not u x w_b
    assert any(r["ess"] < 1 for r in decoupled if r["step"])  # while w_b != 1
    assert same(*s[0]) and same(*s[1])  # the start, then r = 1 on the first step
    assert abs(s[2][0]["grad_norm"] - s[2][1]["grad_norm"]) > 1e-3  # r != 1 from step 2 on
    assert all(not same(*s[step]) for step in (3, 4))
    assert any(r.get("below08_pos", 0) > 0 for r in sampler)  # r < 0.8: stale right tokens


def test_lag_zero_members_get_no_behaviour_weight_beside_stale_ones(monkeypatch):
    """One batched model, members of lags 0 and 2, the decoupled anchor: the stale member's loss
    gets its w_b, the lag-0 member's none (None, as on-policy: what a user's loss is handed)."""
    _alternating_score(monkeypatch)
    cfg = _cfg(ratio_anchor="decoupled")
    torch.manual_seed(0)
    current, stale = GPT(na.model_config(cfg)), GPT(na.model_config(cfg))
    model = batched.StackedGPT(na.model_config(cfg), [current.state_dict()] * 2)
    behaviour = batched.StackedGPT(na.model_config(cfg),  # member 0 at lag 0: today's weights
                                   [current.state_dict(), stale.state_dict()])
    calls, real_loss = [], na.policy_loss
    monkeypatch.setattr(na, "policy_loss", lambda method, logp, *a, behaviour_weights=None, **k:
                        calls.append((len(logp), behaviour_weights))
                        or real_loss(method, logp, *a, behaviour_weights=behaviour_weights, **k))
    problems = rewards.make_problems(cfg.prompts, 0, "train")
    na.rl_step(model, torch.optim.AdamW(model.parameters(), lr=cfg.lr), [problems] * 2, cfg,
               ["grpo"] * 2, [torch.Generator().manual_seed(s) for s in (0, 1)],
               behaviour=behaviour, lags=[0, 2])
    assert len(calls) == 2 * cfg.mu and all(n == 1 for n, _ in calls)  # per update: each apart
    assert [w is None for _, w in calls] == [True, False] * cfg.mu  # member 0, then member 1
    assert all((w != 1).any() for _, w in calls[1::2])  # the stale member's own w_b


def _user_loss(tmp_path, weights: str):
    """A verl-style loss (A x the plain ratio, token-mean) with a rollout_is_weights parameter
    as `weights` writes it ("" for none) and, where so, what it does with them."""
    path = tmp_path / "my_loss.py"
    head = "def fn(old_log_prob, log_prob, advantages, response_mask"
    path.write_text("import torch\n\n" + head + (", rollout_is_weights=None" if weights else "")
                    + "):\n" + weights + "    ratio = (log_prob - old_log_prob).exp()\n"
                    "    return -(advantages * ratio * response_mask).sum() / "
                    "response_mask.sum()\n")
    return f"{path}:fn"


@pytest.mark.parametrize("weights,lags,anchor,refused", [
    ("", "0,2", "decoupled", "it does not take rollout_is_weights, which --ratio-anchor decoupled"),
    ("    assert rollout_is_weights is None\n", "2", "decoupled", "it raised AssertionError"),
    ("", "0,2", "sampler", None), ("", "0", "decoupled", None),
    ("    assert rollout_is_weights is None\n", "0,2", "sampler", None)])
def test_a_user_loss_that_cannot_take_behaviour_weights_is_refused_before_any_work(
        tmp_path, tiny_args, capsys, weights, lags, anchor, refused):
    """Only where a stale lag under the decoupled anchor will hand it w_b: a one-line error naming
    --ratio-anchor, before pretraining. Lag 0 (under both anchors) and the sampler anchor (at any
    lag) hand a loss none, so it trains there (before: a lag-0 run beside lag 2 stopped at step 1
    with 'it does not take rollout_is_weights')."""
    spec, out = _user_loss(tmp_path, weights), tmp_path / "o"
    argv = [*tiny_args, "--methods", f"grpo,{spec}", "--rollout-lag", lags, "--ratio-anchor",
            anchor, "--steps", "3", "--quiet", "--out-dir", str(out)]
    status, err = na.main(argv), capsys.readouterr().err.strip().splitlines()
    if refused:
        assert status == 2 and len(err) == 1 and refused in err[0], err
        assert "--ratio-anchor" in err[0] and err[0].startswith("nano_aspo.py: error: --methods")
        assert not out.exists()
    else:
        assert status == 0 and not err, err


def test_a_user_loss_at_a_stale_lag_trains_as_the_builtin_it_copies(tmp_path, tiny_args):
    """The verl plugin's aspo (it multiplies its loss by rollout_is_weights, as verl's vanilla
    does) beside aspo, under the decoupled anchor at lags 0 and 2: every logged number the same,
    so the stale run hands it its w_b and the lag-0 run none."""
    rows, summary = _run(tmp_path, tiny_args, "u", "--seeds", "0", "--methods", f"aspo,{PLUGIN}",
                         "--rollout-lag", "0,2", "--ratio-anchor", "decoupled")
    assert all("error" not in r for r in summary["runs"])
    for lag in (0, 2):
        mine, aspo = ({k[1:]: v for k, v in _numbers(rows, lag).items() if k[0] == m}
                      for m in (PLUGIN, "aspo"))
        assert mine.keys() == aspo.keys() and len(mine) > 20
        assert all(math.isclose(mine[k], aspo[k], abs_tol=1e-5) for k in mine), lag
    assert any(r["ess"] < 1 for r in rows if r["lag"] == 2 and r["step"])  # w_b != 1 there


@pytest.mark.parametrize("method", na.METHODS)
def test_decoupled_weights_are_the_behaviour_weight_times_the_methods_weight(method):
    """By autograd, per branch (both signs, every ratio range, cap included): w = w_b x w(u)."""
    gen = torch.Generator().manual_seed(0)
    u = torch.tensor([[0.2, 0.5, 0.9, 1.0, 1.1, 1.5], [0.3, 0.85, 1.0, 1.25, 2.5, 4.0]] * 2,
                     dtype=torch.float64)
    old = -torch.rand(u.shape, generator=gen, dtype=torch.float64) - 0.1
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0], dtype=torch.float64)
    mask = torch.ones_like(u)
    entropy = torch.rand(u.shape, generator=gen, dtype=torch.float64)
    prox, behaviour = old, old - torch.randn(u.shape, generator=gen, dtype=torch.float64)
    cfg = na.Config(ratio_anchor="decoupled", behaviour_cap=2.0)
    _, w_b = na.anchor(prox, behaviour, cfg)
    assert torch.equal(w_b, (prox - behaviour).exp().clamp(max=2.0)) and (w_b == 2.0).any()
    kw = dict(entropy=entropy)
    weighted = na.token_weights(method, old + u.log(), old, adv, mask, behaviour_weights=w_b, **kw)
    plain = na.token_weights(method, old + u.log(), old, adv, mask, **kw)
    torch.testing.assert_close(weighted, w_b * plain)


def test_staleness_metrics_on_a_hand_made_batch():
    prox = torch.tensor([[[0.0, -1.0, -2.0], [-0.5, 0.0, 0.0]]])  # (S=1, B=2, T=3)
    behaviour = torch.tensor([[[0.0, -1.5, -1.0], [-1.5, 0.0, 0.0]]])
    mask = torch.tensor([[[1.0, 1, 1], [1, 1, 0]]])
    m = na.staleness(prox, behaviour, mask)
    log_w = [0.0, 0.5, -1.0, 1.0, 0.0]  # e^1 = 2.72: above the default cap 2
    assert m["drift"][0] == pytest.approx(sum(x * x for x in log_w) / 5)
    w = [math.exp(x) for x in log_w]  # the ESS of the untruncated weights
    assert m["ess"][0] == pytest.approx(sum(w) ** 2 / (5 * sum(x * x for x in w)))
    # the stale positive tokens of the ratio the method sees (u under the decoupled anchor), and
    # the weights grpo (u) and aspo (min(1/u, c)) give them, times the behaviour weight w_b
    u = torch.tensor([[0.25, 0.5, 0.9, 1.2]], dtype=torch.float64)
    A = torch.tensor([[1.0, 1.0, 1.0, -1.0]], dtype=torch.float64)
    w_b = torch.tensor([[1.5, 0.5, 0.5, 1.0]], dtype=torch.float64)  # u x w_b: 0.375 0.25 0.45
    r = na.ratio_metrics(u, A, torch.ones_like(u), 0.2, 0.28, 3.0, w_b)
    assert r["below08_pos"] == pytest.approx(2 / 3) and r["below03_pos"] == pytest.approx(1 / 3)
    assert r["w_grpo_below08_pos"] == pytest.approx((1.5 * 0.25 + 0.5 * 0.5) / 2)
    assert r["w_aspo_below08_pos"] == pytest.approx((1.5 * 3.0 + 0.5 * 2.0) / 2)  # 1/0.25 -> c


@pytest.mark.parametrize("flags, flag", [
    (["--rollout-lag", "-1"], "--rollout-lag"), (["--rollout-lag", "2,x"], "--rollout-lag"),
    (["--rollout-lag", "2,2"], "--rollout-lag"), (["--rollout-lag", "1,,2"], "--rollout-lag"),
    (["--rollout-lag", "1,2,"], "--rollout-lag"), (["--ratio-anchor", "rollout"], "--ratio-anchor"),
    (["--behaviour-cap", "0.5"], "--behaviour-cap")])
def test_bad_stale_flags_are_one_line_errors_naming_the_flag(flags, flag, capsys, tmp_path,
                                                              tiny_args):
    # tiny and no steps: one wrongly accepted costs a second, not a demo
    assert na.main([*tiny_args, "--steps", "0", *flags, "--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and flag in err[0], err


def test_a_lag_beyond_the_memory_bound_is_a_one_line_error(tmp_path, tiny_args, monkeypatch,
                                                           capsys):
    config = na.model_config(na.parse_config(tiny_args))
    train = batched.member_bytes(config, 4 * 4, na.block_size(na.parse_config(tiny_args)))
    monkeypatch.setattr(batched, "free_memory", lambda device: 2 * train + 1)  # no past weights
    status = na.main([*tiny_args, "--seeds", "0", "--methods", "grpo,aspo", "--rollout-lag",
                      "1000", "--steps", "1000", "--out-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and "--rollout-lag" in err[0], err


def test_the_closing_table_keys_on_method_and_lag():
    start = {"n_problems": 4, "pass@1": 0.5, "pass@1_se": 0.1, "pass@k": 0.7, "pass@k_se": 0.1,
             "entropy": 0.3, "hard_pass@k": 0.4, "careful_hard": 0.1}
    runs = [{"method": m, "lag": lag, "seed": s, "stale": {},
             "final": dict(start, careful_hard=ch)}
            for lag in (0, 4) for s in (0, 1, 2)
            for m, ch in (("grpo", 0.02 if lag else 0.9), ("aspo", 0.6))]
    summary = stats.compare(runs)
    by = {(c["method"], c["metric"]): c for c in summary["comparison"]}
    assert by["aspo L4", "careful_hard"]["baseline"] == "grpo L4"
    assert by["aspo L4", "careful_hard"]["mean"] == pytest.approx(0.58)
    assert by["aspo", "careful_hard"]["mean"] == pytest.approx(-0.3)
    escaped = {(o["method"], o["outcome"]): o["locked"] for o in summary["outcomes"]}
    assert escaped["grpo L4", "escaped"] == 0 and escaped["grpo L4", "forgot"] == 3
    assert escaped["aspo L4", "escaped"] == 3
    lines = stats.summary_lines(start, runs, summary, 8)
    assert any(line.startswith("grpo L4") for line in lines)
    assert any("aspo L4 - grpo L4, escaped: +1.000 (3 seeds only aspo L4" in line for line in lines)
