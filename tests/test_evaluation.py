"""Held-out evaluation: pass@k (unbiased, against brute force), per-problem metrics on a constructed
rollout, the hard subset and standard errors, and the numbers summary.json keeps (summary_numbers)."""
import itertools

import pytest
import torch

import nano_aspo as na
import sampler
import rewards
from stats import bootstrap_se


@pytest.mark.parametrize("n,c,k,want", [(4, 1, 1, 0.25), (16, 0, 1, 0.0), (16, 0, 8, 0.0), (16, 16, 8, 1.0),
                                        (4, 4, 1, 1.0), (4, 2, 2, 1 - 1 / 6), (16, 3, 1, 3 / 16), (10, 8, 3, 1.0)])
def test_pass_at_k_known_values(n, c, k, want):
    assert na.pass_at_k(n, c, k) == pytest.approx(want, abs=1e-12)


def test_pass_at_k_equals_brute_force():
    for n in range(1, 7):
        for c in range(n + 1):
            for k in range(1, n + 1):
                subsets = list(itertools.combinations([1] * c + [0] * (n - c), k))
                want = sum(any(s) for s in subsets) / len(subsets)
                assert na.pass_at_k(n, c, k) == pytest.approx(want, abs=1e-12), (n, c, k)


def test_evaluate_per_problem_metrics_hard_subset_and_standard_errors(monkeypatch):
    # 4 problems x n = 4 samples with known rewards and texts: two easy, two hard (carry)
    problems = [rewards.carry_problem([123, 456], 3), rewards.carry_problem([111, 222], 3),
                rewards.carry_problem([407, 38], 3), rewards.carry_problem([999, 1], 3)]
    r = torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.float)
    texts = ["c975", "n975", "c975", "n975", "c333", "x", "x", "x",
             "c544", "c544", "n534", "n534", "n099", "n099", "c0001x", "n0"]
    T = 3
    roll = sampler.Rollout(None, None, None, torch.ones(16, T), torch.zeros(16, T), torch.full((16, T), 0.5))
    monkeypatch.setattr(na, "rollout_and_score", lambda model, probs, n, cfg, gen: (r, roll, texts))
    cfg = na.Config(eval_samples=4, k=2)
    (m,) = na.evaluate(torch.nn.Linear(1, 1), problems, cfg, [0])
    p1 = [1.0, 0.25, 0.5, 0.0]
    p2 = [1.0, 1 - 3 / 6, 1 - 1 / 6, 0.0]  # 1 - C(n-c, 2) / C(4, 2)
    assert m["eval_pass@1"] == pytest.approx(sum(p1) / 4) and m["eval_pass@2"] == pytest.approx(sum(p2) / 4)
    assert m["eval_hard_pass@1"] == pytest.approx((0.5 + 0.0) / 2) and m["eval_hard_pass@2"] == pytest.approx(p2[2] / 2)
    assert m["eval_careful_hard"] == pytest.approx((0.5 + 0.25) / 2)  # "c544" x2 of 4, "c0001x" 1 of 4
    # distinct correct among the first k = 2 samples: {"c975", "n975"}, {"c333"}, {"c544"}, {}
    assert m["eval_distinct_correct"] == pytest.approx((2 + 1 + 1 + 0) / 4)
    assert m["eval_entropy"] == pytest.approx(0.5) and m["eval_dead_groups"] == pytest.approx(0.5)
    assert m["eval_pass@1_se"] == pytest.approx(bootstrap_se(p1, 0)) and 0.1 < m["eval_pass@1_se"] < 0.3


def test_summary_numbers_drop_the_prefix_and_name_pass_at_k():
    m = {"eval_pass@1": 0.5, "eval_pass@4": 0.8, "eval_pass@4_se": 0.1, "eval_hard_pass@4": 0.6, "reward": 0.3,
         "samples": []}
    assert na.summary_numbers(m, 4, 10) == {"k": 4, "n_problems": 10, "pass@1": 0.5, "pass@k": 0.8,
                                             "pass@k_se": 0.1, "hard_pass@k": 0.6}


def test_sampling_and_eval_seeds_pair_methods_and_differ_per_seed_and_step():
    streams = {na.sampling_seed(seed, step) for seed in range(5) for step in range(1, 200)}
    assert len(streams) == 5 * 199  # one stream per (seed, step), the same for every method
    assert len({na.eval_seed(seed) for seed in range(100)}) == 100 and na.eval_seed(0) == 1  # seed 0's = the start's
