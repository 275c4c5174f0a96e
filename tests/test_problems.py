"""The carry task's problems: make_problems (determinism, disjoint splits, easy share, bad arguments),
random_problem against an independent sum, and corrupt (the imperfect teacher's wrong answers)."""
import itertools
import random
import re
import time

import pytest

import rewards
from rewards import score


def test_make_problems_is_deterministic_per_seed():
    a = rewards.make_problems(200, 7, "train")
    assert a == rewards.make_problems(200, 7, "train")
    assert a != rewards.make_problems(200, 8, "train")
    assert len({p.prompt for p in a}) == 200  # distinct


def test_train_and_test_splits_are_disjoint():
    train = rewards.make_problems(2000, 0, "train", digits=2)
    test = rewards.make_problems(300, 0, "test", digits=3)
    train3 = rewards.make_problems(2000, 0, "train", digits=3)
    assert all(rewards.split_of(p.prompt) == "train" for p in train + train3)
    assert all(rewards.split_of(p.prompt) == "test" for p in test)
    assert {p.prompt for p in train3}.isdisjoint({p.prompt for p in test})
    # another seed draws other problems but never crosses the split
    other = rewards.make_problems(300, 99, "test")
    assert {p.prompt for p in other} != {p.prompt for p in test}
    assert {p.prompt for p in other}.isdisjoint({p.prompt for p in train3})


@pytest.mark.parametrize("kwargs", [dict(split="dev"), dict(n=-1), dict(digits=0), dict(operands=1),
                                    dict(easy_share=1.5), dict(easy_share=-0.1)])
def test_make_problems_bad_args_raise(kwargs):
    args = dict(n=5, seed=0, split="train", digits=2, operands=2) | kwargs
    with pytest.raises(ValueError):
        rewards.make_problems(**args)


def test_make_problems_exhausts_a_small_space_then_raises():
    # digits=1, operands=2: exactly 100 prompts, split by hash
    all_train = {f"{a}+{b}=" for a, b in itertools.product(range(10), repeat=2) if rewards.split_of(f"{a}+{b}=") == "train"}
    got = rewards.make_problems(len(all_train), 0, "train", digits=1)
    assert {p.prompt for p in got} == all_train
    t0 = time.perf_counter()
    with pytest.raises(ValueError):
        rewards.make_problems(len(all_train) + 1, 0, "train", digits=1)
    assert time.perf_counter() - t0 < 10  # bounded, not an infinite loop
    assert rewards.make_problems(0, 0, "train") == []


@pytest.mark.parametrize("operands", [2, 3])
def test_random_problem_against_an_independent_sum(operands):
    rng = random.Random(0)
    for easy in (None, True, False):
        for _ in range(300):
            p = rewards.random_problem(rng, 3, operands, easy)
            xs = [int(x) for x in p.prompt[:-1].split("+")]
            assert re.fullmatch(rf"(\d{{3}}\+){{{operands - 1}}}\d{{3}}=", p.prompt)  # zero-padded: the columns line up
            columns = [sum(x // 10 ** i % 10 for x in xs) for i in range(3)]
            assert p.easy == (max(columns) < 10) and (easy is None or p.easy == easy)
            assert p.answer == "c" + str(sum(xs))[::-1] and score(p, p.answer) == 1.0
            no_carry = sum(c % 10 * 10 ** i for i, c in enumerate(columns))
            assert p.shortcut == "n" + str(no_carry)[::-1]
            assert score(p, p.shortcut) == (1.0 if p.easy else 0.0)  # the shortcut is right exactly when easy


def test_make_problems_easy_share_and_natural_mix():
    natural = rewards.make_problems(2000, 0, "test")
    assert 0.12 < sum(p.easy for p in natural) / 2000 < 0.22  # 0.55 ** 3 = 0.166 of 3-digit pairs carry nowhere
    pool = rewards.make_problems(1000, 0, "train", easy_share=0.9)
    assert 0.86 < sum(p.easy for p in pool) / 1000 < 0.94
    assert all(p.easy for p in rewards.make_problems(100, 0, "train", easy_share=1.0))
    assert not any(p.easy for p in rewards.make_problems(100, 0, "train", easy_share=0.0))
    assert {p.prompt for p in pool}.isdisjoint({p.prompt for p in natural})


def test_corrupt_changes_one_digit_keeps_the_marker_and_is_wrong():
    rng = random.Random(0)
    for p in rewards.make_problems(30, 1, "train", easy_share=0.5):
        for ans in (p.answer, p.shortcut):
            outs = set()
            for _ in range(100):
                c = rewards.corrupt(ans, rng)
                assert len(c) == len(ans) and c[0] == ans[0]
                assert sum(x != y for x, y in zip(c, ans)) == 1  # exactly one digit changed
                outs.add(c)
            assert len(outs) > 1  # it really is random
            if score(p, ans):
                assert not any(score(p, c) for c in outs)  # a corrupted right answer is wrong


def test_corrupt_protects_the_units_digit_from_zero():
    # the rule of corrupt's docstring: the digit after the marker never becomes 0, the last one may
    rng = random.Random(0)
    outs = {rewards.corrupt("c544", rng) for _ in range(500)}
    assert not any(c[1] == "0" for c in outs)
    assert "c540" in outs
