"""The start policy (issue: a start that is the same on every machine): on a reduced configuration
that trains in minutes, the pretrained policy lands in the band on one and on two CPU threads, with
its randomness set by the teacher's mixture, not by where training stopped (slow: CI runs it; the
full start band is `python experiments/runs.py start`). Phase 5's criterion on known gaps."""
import dataclasses

import pytest
import torch

import nano_aspo as na
import pretrain
from experiments.start_probe import strategy_accuracy, teacher_accuracy
from experiments.stats import STRATEGY_KEYS, TEACHER_TOLERANCE, teacher_gaps

CPU = torch.device("cpu")
# 2-digit problems: the same mixture as the default (careful share 0.1, half-easy held-out set)
REDUCED = ["--digits", "2", "--pretrain-steps", "1200", "--pretrain-batch", "64", "--eval-problems", "200",
           "--curve-problems", "50", "--train-problems", "200"]


def _pretrain(threads: int, argv=()):
    """A reduced start pretrained on `threads` threads, and its config."""
    cfg = na.parse_config(REDUCED + list(argv))
    torch.set_num_threads(threads)
    try:
        return pretrain.pretrain(cfg, CPU, log=lambda *a: None), cfg
    finally:
        torch.set_num_threads(1)


@pytest.fixture(scope="module")
def starts():
    """Held-out metrics of the reduced start on one and on two threads (the band's only inputs)."""
    out = {}
    for threads in (1, 2):
        model, cfg = _pretrain(threads)
        (out[threads],) = na.evaluate(model, na.task_problems(cfg, "test"), cfg, [1])
    return out


@pytest.mark.slow
def test_start_band_on_one_and_two_threads(starts):
    for threads, m in starts.items():
        p1, pk = m["eval_pass@1"], m["eval_pass@8"]
        assert 0.2 <= p1 <= 0.7 and pk - p1 >= 0.15 and pk <= 0.85, (threads, p1, pk)
    assert abs(starts[1]["eval_pass@1"] - starts[2]["eval_pass@1"]) <= 0.06


@pytest.mark.slow
def test_start_reproduces_the_teachers_strategy_share(starts):
    # the careful share on hard problems is the teacher's 0.1 (200 problems x 16 samples: +- ~0.02)
    for m in starts.values():
        assert 0.06 <= m["eval_careful_hard"] <= 0.14


def test_teacher_gaps_are_start_minus_teacher_and_the_criterion_takes_either_sign():
    teacher = {"careful_acc_easy": 0.8, "careful_acc_hard": 0.8, "shortcut_acc_easy": 0.95,
               "shortcut_acc_hard": 0.003}
    offsets = {"careful_acc_easy": 0.019, "careful_acc_hard": -0.019, "shortcut_acc_easy": 0.0,
               "shortcut_acc_hard": 0.01}
    start = {key: teacher[key] + offsets[key] for key in STRATEGY_KEYS}
    gaps = teacher_gaps(start, teacher)
    assert gaps == pytest.approx(offsets, abs=1e-12)  # signed: a start above its teacher is > 0
    assert all(abs(g) <= TEACHER_TOLERANCE for g in gaps.values())
    for key in ("careful_acc_hard", "shortcut_acc_easy"):  # 0.021 off, either way, fails
        for sign in (1, -1):
            off = teacher_gaps(start | {key: teacher[key] + sign * 0.021}, teacher)
            assert not all(abs(g) <= TEACHER_TOLERANCE for g in off.values()), (key, sign)
    # a kind of problem the held-out set lacks (None) is left out, not counted as a gap
    without = teacher_gaps(start | {"careful_acc_hard": None}, teacher)
    assert without.keys() == set(STRATEGY_KEYS) - {"careful_acc_hard"}


def test_the_criterion_fails_a_start_that_has_not_converged():
    # phase 5's criterion on a pretraining stopped early (100 steps): each strategy is known far
    # worse than by its teacher (~0.01 against 0.8 and 0.95), but for the shortcut on hard problems,
    # where the teacher's own value is ~0.003. (No reduced configuration that trains in seconds
    # converges: experiments/README.md 5a; the passing side is checked on the full start by
    # `python experiments/runs.py start`.)
    model, cfg = _pretrain(1, ["--pretrain-steps", "100"])
    test = na.task_problems(cfg, "test")
    m = strategy_accuracy(model, test, dataclasses.replace(cfg, eval_samples=4), seed=2)
    gaps = teacher_gaps(m, teacher_accuracy(test, cfg))
    known = ("careful_acc_easy", "careful_acc_hard", "shortcut_acc_easy")
    assert all(gaps[key] < -0.5 for key in known), gaps
    assert abs(gaps["shortcut_acc_hard"]) < 0.05, gaps


def test_teachers_accuracy_is_what_its_noise_allows():
    cfg = na.Config()
    t = teacher_accuracy(na.task_problems(cfg, "test"), cfg)
    assert t["careful_acc_easy"] == pytest.approx(1 - cfg.careful_noise)
    assert t["careful_acc_hard"] == pytest.approx(1 - cfg.careful_noise)  # a corrupted careful answer is wrong
    assert t["shortcut_acc_easy"] == pytest.approx(1 - cfg.shortcut_noise)
    # a corrupted shortcut is sometimes right on a hard problem (the change fixes its one wrong digit)
    assert 0 < t["shortcut_acc_hard"] < 0.01


def test_rl_pool_and_held_out_set_are_disjoint():
    cfg = na.Config()
    train, test = na.task_problems(cfg, "train"), na.task_problems(cfg, "test")
    assert len(test) >= 500 and len({p.prompt for p in test}) == len(test)
    assert {p.prompt for p in train}.isdisjoint({p.prompt for p in test})
