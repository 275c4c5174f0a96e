"""score and the carry verifier: hand cases, then a fuzz (garbage, huge, unicode, eval bait, near misses)
against an independent oracle: never raises, never evaluates text, never rewards a wrong answer."""
import builtins
import random

import pytest

import rewards
from rewards import Problem, score

C407 = rewards.carry_problem([407, 38], 3)  # 407 + 038 = 445: the units column carries
C123 = rewards.carry_problem([123, 456], 3)  # 579: no column carries
EVAL_BAIT = ["__import__('os').system('echo hi')", "eval('c544')", "exec('x=1')", "c544;import os", "c5'+'44",
             "0x1bd", "c4_4_5", "c5e2", "c544.0", "c{544}", "${c544}", "c\\x35\\x34\\x34"]


def test_carry_problem_fields():
    assert (C407.prompt, C407.answer, C407.shortcut, C407.easy) == ("407+038=", "c544", "n534", False)
    assert (C123.prompt, C123.answer, C123.shortcut, C123.easy) == ("123+456=", "c975", "n975", True)
    big = rewards.carry_problem([999, 1], 3)  # 1000: every column carries, the shortcut writes 990 -> "n099"
    assert (big.answer, big.shortcut) == ("c0001", "n099")
    assert rewards.carry_problem([500, 500], 3).shortcut == "n0"  # 5+5 = 10 -> 0 in the only non-zero column
    assert rewards.column_sums([407, 38]) == [15, 3, 4]


@pytest.mark.parametrize("problem,text,expected", [
    (C407, "c544", 1.0), (C407, "n544", 1.0), (C407, " c544\n", 1.0), (C407, "\n\nn544  ", 1.0),
    # wrong digits, the shortcut on a carry problem, digits the usual way round
    (C407, "n534", 0.0), (C407, "c534", 0.0), (C407, "c445", 0.0), (C407, "c54", 0.0), (C407, "c", 0.0),
    # near misses: wrong or missing marker, leading/trailing zeros, extra digits, inner space
    (C407, "544", 0.0), (C407, "x544", 0.0), (C407, "C544", 0.0), (C407, "cc544", 0.0), (C407, "nc544", 0.0),
    (C407, "c5440", 0.0), (C407, "c0544", 0.0), (C407, "c5444", 0.0), (C407, "c 544", 0.0), (C407, "c544c", 0.0),
    (C407, "c544n544", 0.0), (C407, "", 0.0), (C407, "  \n", 0.0),
    # other whitespace at the ends is not stripped
    (C407, "c544\t", 0.0), (C407, "\tc544", 0.0), (C407, "c544\r", 0.0), (C407, "\u00a0c544", 0.0),
    # unicode digits and invisible characters
    (C407, "c٥٤٤", 0.0), (C407, "c５４４", 0.0), (C407, "c⁵⁴⁴", 0.0), (C407, "c५४४", 0.0), (C407, "c54４", 0.0),
    (C407, "c5\u200b44", 0.0), (C407, "\ufeffc544", 0.0), (C407, "c544\x00", 0.0),
    (C123, "c975", 1.0), (C123, "n975", 1.0), (C123, "c579", 0.0),
    # a plain Problem accepts exactly its answer
    (Problem("5+7=", "12"), "12", 1.0), (Problem("5+7=", "12"), " 12\n", 1.0), (Problem("5+7=", "12"), "012", 0.0),
] + [(C407, bait, 0.0) for bait in EVAL_BAIT])
def test_score_cases(problem, text, expected):
    assert score(problem, text) == expected


@pytest.mark.parametrize("bad", [None, 12, 12.0, b"c544", ["c544"], bytearray(b"c544")])
def test_score_non_str_is_zero(bad):
    assert score(C407, bad) == 0.0


def test_score_non_problem_is_zero():
    assert score(None, "c544") == 0.0
    assert score("407+038=", "c544") == 0.0


def test_huge_completion_is_scored_like_any_other():
    # how fast: experiments/bench.py's "verifier" line
    assert score(C407, "c" + "5" * 1_000_000) == 0.0
    assert score(C407, "c544" * 100_000) == 0.0
    assert score(C407, " " * 100_000 + "c544" + "\n" * 100_000) == 1.0


def oracle(problem, text):
    """Independent statement of the rule, from the prompt alone: stripped of ' ' and '\\n', the text is
    'c' or 'n' followed by the decimal sum of the prompt's numbers, reversed."""
    digits = str(sum(int(x) for x in problem.prompt.rstrip("=").split("+")))[::-1]
    first, end = 0, len(text)  # one pass from each end (not str.strip, which the verifier may use)
    while first < end and text[first] in " \n":
        first += 1
    while end > first and text[end - 1] in " \n":
        end -= 1
    return 1.0 if text[first:end] in ("c" + digits, "n" + digits) else 0.0


def fuzz_string(rng, problem, kind):
    """One string of kind 0-5 for `problem`: random code points, a noisy edit of a right or near-right
    answer, a noisy alphabet, a huge string, eval bait, a right answer with whitespace around it."""
    noise = "0123456789cnCN+-= \n\t\r.eE_x,١５\x00\u200b😀"
    right = problem.answer[1:]
    bases = ["c" + right, "n" + right, problem.shortcut, " c" + right + "\n", right]
    if kind == 0:  # random code points, surrogates included
        return "".join(chr(rng.randrange(0x110000)) for _ in range(rng.randrange(0, 12)))
    elif kind == 1:  # a right (or near-right) answer with noise inserted, deleted or replaced
        s = list(rng.choice(bases))
        for _ in range(rng.randrange(1, 4)):
            op = rng.randrange(3)
            if op == 0 or not s:
                s.insert(rng.randrange(len(s) + 1), rng.choice(noise))
            elif op == 1:
                del s[rng.randrange(len(s))]
            else:
                s[rng.randrange(len(s))] = rng.choice(noise)
        return "".join(s)
    elif kind == 2:  # strings over the noisy alphabet
        return "".join(rng.choice(noise) for _ in range(rng.randrange(0, 8)))
    elif kind == 3:  # very long strings
        return rng.choice(["9", "c", " ", "\n", "c" + right, "n"]) * rng.randrange(1000, 20000)
    elif kind == 4:  # eval bait, alone or around the answer
        bait = rng.choice(EVAL_BAIT)
        return rng.choice([bait, "c" + right + bait, bait + "c" + right])
    else:  # a right answer with spaces, newlines or a tab around it
        return rng.choice(["", " ", "\n"]) + rng.choice("cn") + right + rng.choice(["", " ", "\n \n", "\t"])


def test_fuzz_never_raises_never_evaluates_never_rewards_a_wrong_answer(monkeypatch):
    calls = []

    def forbidden(*a, **k):
        calls.append(a)
        raise AssertionError("score evaluated text")

    monkeypatch.setattr(builtins, "eval", forbidden)
    monkeypatch.setattr(builtins, "exec", forbidden)
    rng = random.Random(12345)
    problems = rewards.make_problems(20, 0, "test", easy_share=0.5) + [C407, C123, rewards.carry_problem([999, 1], 3)]
    seen = {0.0: 0, 1.0: 0}
    for i in range(12_000):
        problem = problems[i % len(problems)]
        text = fuzz_string(rng, problem, i % 6)
        s = score(problem, text)
        assert type(s) is float and s == oracle(problem, text), (problem, text[:50])
        seen[s] += 1
    assert calls == []
    assert seen[1.0] > 500 and seen[0.0] > 5000  # the fuzz hits both outcomes
