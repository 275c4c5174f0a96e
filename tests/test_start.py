"""The start policy (issue: a start that is the same on every machine): on a reduced configuration
that trains in seconds, the pretrained policy lands in the band on one and on two CPU threads, with
its randomness set by the teacher's mixture, not by where training stopped."""
import pytest
import torch

import nano_aspo as na

CPU = torch.device("cpu")
# 2-digit problems: the same mixture as the default (careful share 0.1, half-easy held-out set)
REDUCED = ["--digits", "2", "--pretrain-steps", "1200", "--eval-problems", "200", "--curve-problems", "50",
           "--train-problems", "200"]


def _start(threads: int) -> dict:
    cfg = na.parse_config(REDUCED)
    torch.set_num_threads(threads)
    try:
        model = na.pretrain(cfg, CPU, log=lambda *a: None)
    finally:
        torch.set_num_threads(1)
    return na.evaluate(model, na.task_problems(cfg, "test"), cfg, seed=1)


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


def test_rl_pool_and_held_out_set_are_disjoint():
    cfg = na.Config()
    train, test = na.task_problems(cfg, "train"), na.task_problems(cfg, "test")
    assert len(test) >= 500 and len({p.prompt for p in test}) == len(test)
    assert {p.prompt for p in train}.isdisjoint({p.prompt for p in test})
