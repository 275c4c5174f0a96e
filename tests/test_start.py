"""The start policy (issue: a start that is the same on every machine): on a reduced configuration
that trains in seconds, the pretrained policy lands in the band on one and on two CPU threads, with
its randomness set by the teacher's mixture, not by where training stopped."""
import dataclasses

import pytest
import torch

import nano_aspo as na
import pretrain
from experiments.start_probe import strategy_accuracy, teacher_accuracy
from experiments.stats import TEACHER_TOLERANCE, teacher_gaps

CPU = torch.device("cpu")
# 2-digit problems: the same mixture as the default (careful share 0.1, half-easy held-out set)
REDUCED = ["--digits", "2", "--pretrain-steps", "1200", "--pretrain-batch", "64", "--eval-problems", "200",
           "--curve-problems", "50", "--train-problems", "200"]


def _start(threads: int, argv=()) -> dict:
    """A reduced start on `threads` threads: its held-out metrics, each strategy's accuracy (marker
    given, 32 samples per problem) and the teacher's own."""
    cfg = na.parse_config(REDUCED + list(argv))
    torch.set_num_threads(threads)
    try:
        model = pretrain.pretrain(cfg, CPU, log=lambda *a: None)
    finally:
        torch.set_num_threads(1)
    test = na.task_problems(cfg, "test")
    (m,) = na.evaluate(model, test, cfg, [1])
    m |= strategy_accuracy(model, test, dataclasses.replace(cfg, eval_samples=32), seed=2)
    return m | {"teacher": teacher_accuracy(test, cfg)}


@pytest.fixture(scope="module")
def starts():
    return {threads: _start(threads) for threads in (1, 2)}


def test_start_band_on_one_and_two_threads(starts):
    for threads, m in starts.items():
        p1, pk = m["eval_pass@1"], m["eval_pass@8"]
        assert 0.2 <= p1 <= 0.7 and pk - p1 >= 0.15 and pk <= 0.85, (threads, p1, pk)
    assert abs(starts[1]["eval_pass@1"] - starts[2]["eval_pass@1"]) <= 0.06


def test_start_reproduces_the_teachers_strategy_share(starts):
    # the careful share on hard problems is the teacher's 0.1 (200 problems x 16 samples: +- ~0.02)
    for m in starts.values():
        assert 0.06 <= m["eval_careful_hard"] <= 0.14


def test_the_criterion_passes_the_teacher_itself():
    cfg = na.Config()
    teacher = teacher_accuracy(na.task_problems(cfg, "test"), cfg)
    assert all(abs(g) <= TEACHER_TOLERANCE for g in teacher_gaps(teacher, teacher).values())


def test_the_criterion_fails_a_start_that_has_not_converged():
    # phase 5's criterion (every strategy within 0.02 of the teacher) on a pretraining stopped early.
    # (No reduced configuration that trains in seconds converges: 2-digit problems, 1200 x 64 steps,
    # still miss the careful way on hard problems by 0.38, experiments/README.md 5a; the passing side
    # is checked on the full start by `python experiments/runs.py start`.)
    m = _start(1, ["--pretrain-steps", "100"])
    gaps = teacher_gaps(m, m["teacher"])
    assert not all(abs(g) <= TEACHER_TOLERANCE for g in gaps.values()), gaps


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
