import builtins
import itertools
import random
import re
import time

import pytest

import rewards
from rewards import Problem, score

P12 = Problem("5+7=", "12")
P0 = Problem("3-3=", "0")
PNEG = Problem("5-9=", "-4")


@pytest.mark.parametrize("problem,text,expected", [
    (P12, "12", 1.0), (P0, "0", 1.0), (PNEG, "-4", 1.0),
    (P12, "13", 0.0), (P12, "21", 0.0), (P12, "-12", 0.0), (PNEG, "4", 0.0), (P0, "-0", 0.0),
    # malformed
    (P12, "12a", 0.0), (P12, "1 2", 0.0), (P12, "--5", 0.0), (P12, "+12", 0.0), (P12, "1.0", 0.0),
    (P12, "12.0", 0.0), (P12, "", 0.0), (P12, "12 12", 0.0), (P12, "12=", 0.0), (P12, "5+7=12", 0.0),
    (PNEG, "- 4", 0.0), (PNEG, "-04", 0.0),
    # surrounding spaces and newlines are ignored, other whitespace is not
    (P12, " 12\n", 1.0), (P12, "\n\n12  ", 1.0), (P12, "  12", 1.0), (P12, "12\t", 0.0), (P12, "\t12", 0.0),
    (P12, "12\r", 0.0), (P12, "\r\n12", 0.0), (P12, "\u00a012", 0.0), (P12, "12\x0b", 0.0), (P12, "12\x0c", 0.0),
    # leading zeros
    (P12, "012", 0.0), (P12, "0012", 0.0), (P0, "00", 0.0),
    # unicode digits
    (P12, "١٢", 0.0), (P12, "１２", 0.0), (P12, "¹²", 0.0), (P12, "१२", 0.0), (P12, "1２", 0.0),
    # control characters
    (P12, "12\x00", 0.0), (P12, "\x0012", 0.0), (P12, "1\u200b2", 0.0), (P12, "12\x1b", 0.0), (P12, "\ufeff12", 0.0),
    # code is text, never evaluated
    (P12, "__import__('os').system('echo hi')", 0.0), (P12, "11+1", 0.0), (P12, "3*4", 0.0), (P12, "0x0c", 0.0),
    (P12, "1_2", 0.0), (P12, "12e0", 0.0),
])
def test_score_cases(problem, text, expected):
    assert score(problem, text) == expected


@pytest.mark.parametrize("bad", [None, 12, 12.0, b"12", ["12"], bytearray(b"12")])
def test_score_non_str_is_zero(bad):
    assert score(P12, bad) == 0.0


def test_score_non_problem_is_zero():
    assert score(None, "12") == 0.0
    assert score("5+7=", "12") == 0.0


def test_huge_completion_is_zero_and_fast():
    t0 = time.perf_counter()
    assert score(P12, "9" * 5000) == 0.0
    assert score(P12, "1" * 1_000_000) == 0.0
    assert score(P12, " " * 100_000 + "12" + "\n" * 100_000) == 1.0
    assert time.perf_counter() - t0 < 0.5


def _oracle(problem, text):
    """Independent statement of the rule: strip ' ' and '\\n', then a canonical ASCII integer equal to the answer."""
    m = re.fullmatch(r"[ \n]*(-?(?:0|[1-9][0-9]*))[ \n]*", text, flags=re.ASCII)
    return 1.0 if m and m.group(1) == problem.answer and m.group(1) != "-0" else 0.0


def _fuzz_strings(rng, n, bases=("12", "-4", "0", " 12\n")):
    noise = "0123456789-+ \n\t\r.eE_x,١２\x00\u200b😀"
    for i in range(n):
        kind = i % 5
        if kind == 0:  # random code points, surrogates included
            yield "".join(chr(rng.randrange(0x110000)) for _ in range(rng.randrange(0, 12)))
        elif kind == 1:  # the right answer with noise inserted or deleted
            s = list(rng.choice(bases))
            for _ in range(rng.randrange(1, 4)):
                op = rng.randrange(3)
                if op == 0 or not s:
                    s.insert(rng.randrange(len(s) + 1), rng.choice(noise))
                elif op == 1:
                    del s[rng.randrange(len(s))]
                else:
                    s[rng.randrange(len(s))] = rng.choice(noise)
            yield "".join(s)
        elif kind == 2:  # strings over a small noisy alphabet
            yield "".join(rng.choice(noise) for _ in range(rng.randrange(0, 8)))
        elif kind == 3:  # very long strings
            yield rng.choice(["9", "1", " ", "\n", "12", "-"]) * rng.randrange(1000, 20000)
        else:  # random ints, sometimes with surrounding whitespace
            yield rng.choice(["", " ", "\n"]) + str(rng.randrange(-20, 30)) + rng.choice(["", " ", "\n", "\t"])


def forbid_eval(monkeypatch) -> list:
    """Make builtins.eval and exec raise (and record the call); returns the list of calls."""
    calls = []

    def forbidden(*a, **k):
        calls.append(a)
        raise AssertionError("score evaluated text")

    monkeypatch.setattr(builtins, "eval", forbidden)
    monkeypatch.setattr(builtins, "exec", forbidden)
    return calls


def check_fuzz(monkeypatch, pairs, oracle):
    """score every (problem, text) pair with eval/exec forbidden; each result must be 0.0 or 1.0 and
    agree with the independent oracle, and the fuzz must hit both outcomes."""
    calls = forbid_eval(monkeypatch)
    seen = {0.0: 0, 1.0: 0}
    for pr, text in pairs:
        s = score(pr, text)
        assert type(s) is float and s in (0.0, 1.0)
        assert s == oracle(pr, text), (pr, text[:50])
        seen[s] += 1
    assert calls == []
    assert seen[1.0] > 50 and seen[0.0] > 5000


def test_fuzz_never_raises_never_evaluates(monkeypatch):
    rng = random.Random(12345)
    problems = [P12, P0, PNEG]
    check_fuzz(monkeypatch, ((problems[i % 3], t) for i, t in enumerate(_fuzz_strings(rng, 10_000))), _oracle)


# --- make_problems -----------------------------------------------------------------------------------
def test_make_problems_is_deterministic_per_seed():
    a = rewards.make_problems(200, 7, "train", task="arith")
    b = rewards.make_problems(200, 7, "train", task="arith")
    c = rewards.make_problems(200, 8, "train", task="arith")
    assert a == b
    assert a != c
    assert len({p.prompt for p in a}) == 200  # distinct


def test_train_and_test_splits_are_disjoint():
    train = rewards.make_problems(2000, 0, "train", digits=2, task="arith")
    test = rewards.make_problems(300, 0, "test", digits=2, task="arith")
    train_prompts, test_prompts = {p.prompt for p in train}, {p.prompt for p in test}
    assert len(train_prompts) == 2000 and len(test_prompts) == 300
    assert train_prompts.isdisjoint(test_prompts)
    assert all(rewards.split_of(p) == "train" for p in train_prompts)
    assert all(rewards.split_of(p) == "test" for p in test_prompts)
    # another seed draws other problems but never crosses the split
    other = rewards.make_problems(300, 99, "test", digits=2, task="arith")
    assert {p.prompt for p in other}.isdisjoint(train_prompts)


def _independent_value(prompt):
    """Value of 'a op b op c =' with * before + and -, without rewards.evaluate."""
    toks = re.findall(r"\d+|[-+*]", prompt.rstrip("="))
    total, sign, prod = 0, 1, int(toks[0])
    for op, x in zip(toks[1::2], toks[2::2]):
        if op == "*":
            prod *= int(x)
        else:
            total += sign * prod
            sign, prod = (1 if op == "+" else -1), int(x)
    return total + sign * prod


@pytest.mark.parametrize("digits,operands,ops", [(2, 2, "+"), (2, 2, "-"), (2, 2, "*"), (2, 3, "+-*"), (3, 4, "+-*")])
def test_problem_answers_are_correct(digits, operands, ops):
    problems = rewards.make_problems(300, 3, "train", task="arith", digits=digits, operands=operands, ops=ops)
    used = set()
    for p in problems:
        assert re.fullmatch(rf"(\d{{1,{digits}}}[{re.escape(ops)}]){{{operands - 1}}}\d{{1,{digits}}}=", p.prompt), p
        nums = [int(x) for x in re.findall(r"\d+", p.prompt)]
        assert all(str(x) in p.prompt for x in nums)
        op_str = "".join(re.findall(r"[-+*]", p.prompt))
        used |= set(op_str)
        assert p.answer == str(rewards.evaluate(nums, op_str)) == str(_independent_value(p.prompt))
        assert score(p, p.answer) == 1.0
    assert used == set(ops)


def test_evaluate_known_values():
    assert rewards.evaluate([2, 3, 4], "+*") == 14
    assert rewards.evaluate([2, 3, 4], "*+") == 10
    assert rewards.evaluate([10, 2, 3], "-*") == 4
    assert rewards.evaluate([10, 2, 3], "--") == 5
    assert rewards.evaluate([2, 3, 4, 5], "*-*") == -14


@pytest.mark.parametrize("kwargs", [dict(split="dev"), dict(n=-1), dict(digits=0), dict(operands=1), dict(ops=""),
                                    dict(ops="/"), dict(ops="+/"), dict(easy_share=0.5), dict(task="carry", easy_share=1.5),
                                    dict(task="carry", easy_share=-0.1)])
def test_make_problems_bad_args_raise(kwargs):
    args = dict(n=5, seed=0, split="train", task="arith", digits=2, operands=2, ops="+")
    args.update(kwargs)
    with pytest.raises(ValueError):
        rewards.make_problems(**args)


def test_make_problems_exhausts_a_small_space_then_raises():
    # digits=1, operands=2, ops='+': exactly 100 prompts, split by hash
    all_train = {f"{a}+{b}=" for a, b in itertools.product(range(10), repeat=2) if rewards.split_of(f"{a}+{b}=") == "train"}
    n = len(all_train)
    got = rewards.make_problems(n, 0, "train", digits=1, task="arith")
    assert {p.prompt for p in got} == all_train
    t0 = time.perf_counter()
    with pytest.raises(ValueError):
        rewards.make_problems(n + 1, 0, "train", digits=1, task="arith")
    with pytest.raises(ValueError):
        rewards.make_problems(100, 0, "test", digits=1, task="arith")
    assert time.perf_counter() - t0 < 10  # bounded, not an infinite loop
    assert rewards.make_problems(0, 0, "train") == []


def corruptions(ans: str, rng: random.Random, n: int = 300) -> set:
    """n draws of corrupt(ans): each differs from ans in exactly one position and keeps its length;
    returns the distinct outputs, of which there must be more than one (it really is random)."""
    outs = set()
    for _ in range(n):
        c = rewards.corrupt(ans, rng)
        assert c != ans and len(c) == len(ans)
        assert sum(x != y for x, y in zip(c, ans)) == 1  # exactly one position changed
        outs.add(c)
    assert len(outs) > 1
    return outs


def test_corrupt_changes_one_digit_keeps_length_no_new_leading_zero():
    rng = random.Random(0)
    answers = ["0", "5", "-5", "10", "100", "-10", "-100", "99", "123456", "-987", "1000000"]
    for ans in answers:
        outs = corruptions(ans, rng)
        for c in outs:
            assert c.startswith("-") == ans.startswith("-")
            assert re.fullmatch(r"-?(0|[1-9][0-9]*)", c), (ans, c)  # no leading zero
        assert score(Problem("x=", ans), ans) == 1.0 and all(score(Problem("x=", ans), c) == 0.0 for c in outs)


def test_corrupt_never_produces_negative_zero():
    # "-0" is not a canonical integer (str(int(...)) never gives it): the teacher should not write it
    rng = random.Random(0)
    outs = {rewards.corrupt("-5", rng) for _ in range(300)}
    assert all(str(int(c)) == c for c in outs), sorted(outs)


# --- the split task: many correct answers ---------------------------------------------------------------
S57 = rewards.SplitProblem("57=", "23+34")
S57_3 = rewards.SplitProblem("57=", "1+1+55", parts=3)


@pytest.mark.parametrize("problem,text,expected", [
    (S57, "23+34", 1.0), (S57, "34+23", 1.0), (S57, "50+7", 1.0), (S57, "1+56", 1.0), (S57, "56+1", 1.0),
    (S57, " 23+34\n", 1.0), (S57, "\n50+7  ", 1.0),
    # wrong sum
    (S57, "23+33", 0.0), (S57, "23+35", 0.0), (S57, "57", 0.0), (S57, "1+57", 0.0),
    # zero parts, leading zeros, signs
    (S57, "0+57", 0.0), (S57, "57+0", 0.0), (S57, "00+57", 0.0), (S57, "012+45", 0.0), (S57, "12+045", 0.0),
    (S57, "05+52", 0.0), (S57, "-1+58", 0.0), (S57, "58+-1", 0.0), (S57, "58-1", 0.0),
    # wrong count of parts, empty parts
    (S57, "1+1+55", 0.0), (S57, "20+30+7", 0.0), (S57, "+5+52", 0.0), (S57, "5++52", 0.0), (S57, "5+52+", 0.0),
    (S57, "+57", 0.0), (S57, "57+", 0.0), (S57, "+", 0.0), (S57, "", 0.0), (S57, "++", 0.0),
    # inner whitespace, other whitespace at the ends, non-ASCII digits, other syntax int() would accept
    (S57, "23 +34", 0.0), (S57, "23+ 34", 0.0), (S57, "23 + 34", 0.0), (S57, "23+34\t", 0.0), (S57, "\t23+34", 0.0),
    (S57, "٢٣+34", 0.0), (S57, "23+３４", 0.0), (S57, "２3+34", 0.0), (S57, "2_3+34", 0.0), (S57, "23+3_4", 0.0),
    (S57, "23.0+34", 0.0), (S57, "0x17+34", 0.0), (S57, "23+34=", 0.0), (S57, "57=23+34", 0.0), (S57, "23*1+34", 0.0),
    (S57, "23+34\x00", 0.0), (S57, "2\u200b3+34", 0.0), (S57, "(43)34+23", 0.0),
    # three parts
    (S57_3, "1+1+55", 1.0), (S57_3, "20+30+7", 1.0), (S57_3, "19+19+19", 1.0), (S57_3, "23+34", 0.0),
    (S57_3, "20+30+0+7", 0.0), (S57_3, "0+50+7", 0.0), (S57_3, "20+30+07", 0.0), (S57_3, "20++37", 0.0),
])
def test_split_score_cases(problem, text, expected):
    assert score(problem, text) == expected


def test_split_huge_parts_are_zero_and_fast():
    p = rewards.SplitProblem("100=", "99+1")
    t0 = time.perf_counter()
    for text in ["9" * 5000 + "+1", "1+" + "9" * 5000, "1" * 1_000_000 + "+1", "+".join(["1"] * 100_000),
                 "0" * 5000 + "99+1", "99+" + "0" * 5000 + "1"]:
        assert score(p, text) == 0.0  # never raises (int() refuses > 4300 digits), never slow
    assert score(p, "99+1") == 1.0
    assert time.perf_counter() - t0 < 0.5


def _split_oracle(problem, text):
    """Independent statement of the split rule: strip ' ' and '\\n'; exactly `parts` terms separated by '+',
    each a positive ASCII decimal without leading zeros (and so no longer than N), summing to N."""
    n_str = problem.prompt[:-1]
    terms = text.strip(" \n").split("+")
    if len(terms) != problem.parts:
        return 0.0
    for t in terms:
        if not t or t[0] == "0" or any(ch not in "0123456789" for ch in t) or len(t) > len(n_str):
            return 0.0
    return 1.0 if sum(int(t) for t in terms) == int(n_str) else 0.0


def test_split_fuzz_never_raises_never_evaluates(monkeypatch):
    rng = random.Random(54321)
    problems = [S57, S57_3, rewards.SplitProblem("100=", "99+1")]
    bases = ["23+34", "50+7", "1+1+55", "99+1", " 20+30+7\n", "1+99"]

    def pairs():
        for i, text in enumerate(_fuzz_strings(rng, 10_000, bases)):
            pr = problems[i % 3]
            if i % 7 == 0:  # a correct split of this N, sometimes with whitespace around it (a tab is wrong)
                text = rng.choice(["", " ", "\n"]) + pr.random_answer(rng) + rng.choice(["", " ", "\n", "\t"])
            yield pr, text

    check_fuzz(monkeypatch, pairs(), _split_oracle)


def test_make_problems_split_prompts_answers_and_determinism():
    a = rewards.make_problems(500, 7, "train", digits=3, operands=2, task="split")
    assert a == rewards.make_problems(500, 7, "train", digits=3, operands=2, task="split")
    assert a != rewards.make_problems(500, 8, "train", digits=3, operands=2, task="split")
    assert len({p.prompt for p in a}) == 500
    for p in a:
        assert isinstance(p, rewards.SplitProblem) and p.parts == 2
        assert re.fullmatch(r"[1-9][0-9]{2}=", p.prompt), p
        assert score(p, p.answer) == 1.0 and _split_oracle(p, p.answer) == 1.0
    assert len({p.answer for p in a}) > 400  # the teacher's answers are random splits, not one fixed rule
    for digits in (1, 2, 4):
        for p in rewards.make_problems(5, 0, "train", digits=digits, task="split"):
            assert re.fullmatch(rf"[1-9][0-9]{{{digits - 1}}}=", p.prompt), p


def test_make_problems_split_train_and_test_are_disjoint():
    train = rewards.make_problems(500, 0, "train", digits=3, task="split")
    test = rewards.make_problems(60, 0, "test", digits=3, task="split")  # ~90 3-digit N are held out
    tr, te = {p.prompt for p in train}, {p.prompt for p in test}
    assert len(tr) == 500 and len(te) == 60 and tr.isdisjoint(te)
    assert all(rewards.split_of(p) == "train" for p in tr) and all(rewards.split_of(p) == "test" for p in te)
    other = rewards.make_problems(60, 99, "test", digits=3, task="split")
    assert {p.prompt for p in other}.isdisjoint(tr)
    with pytest.raises(ValueError):  # more held-out N than exist
        rewards.make_problems(200, 0, "test", digits=3, task="split")


def test_make_problems_split_three_parts():
    ps = rewards.make_problems(50, 1, "train", digits=2, operands=3, task="split")
    for p in ps:
        assert p.parts == 3 and p.answer.count("+") == 2 and score(p, p.answer) == 1.0


@pytest.mark.parametrize("operands", [2, 3])
def test_split_random_answer_is_always_correct(operands):
    rng = random.Random(0)
    problems = rewards.make_problems(20, 3, "train", digits=3, operands=operands, task="split")
    problems.append(rewards.SplitProblem(f"{operands}=", "", parts=operands))  # the smallest N: one split only
    for i in range(1000):
        p = problems[i % len(problems)]
        ans = p.random_answer(rng)
        assert ans.count("+") == operands - 1
        assert p.accepts(ans) and score(p, ans) == 1.0 and _split_oracle(p, ans) == 1.0, (p, ans)
    assert problems[-1].random_answer(rng) == "+".join(["1"] * operands)


def test_split_random_answer_covers_every_split():
    p = rewards.SplitProblem("5=", "", parts=2)
    rng = random.Random(1)
    assert {p.random_answer(rng) for _ in range(1000)} == {"1+4", "2+3", "3+2", "4+1"}


def test_make_problems_unknown_task_raises():
    for task in ("foo", "", "Split", "ARITH"):
        with pytest.raises(ValueError):
            rewards.make_problems(5, 0, "train", task=task)


def test_corrupt_split_answers_keeps_the_form():
    rng = random.Random(0)
    for ans, n in [("23+34", 57), ("100+899", 999), ("50+17", 67), ("12+30+45", 87), ("5+52", 57)]:
        p = rewards.SplitProblem(f"{n}=", ans, parts=ans.count("+") + 1)
        assert score(p, ans) == 1.0
        for c in corruptions(ans, rng):
            assert [i for i, ch in enumerate(c) if ch == "+"] == [i for i, ch in enumerate(ans) if ch == "+"]
            for part in c.split("+"):
                assert re.fullmatch(r"0|[1-9][0-9]*", part), (ans, c)  # no leading zero in any part
            assert score(p, c) == 0.0  # one digit changed: the sum changed, the answer is wrong


# --- the carry task: a careful strategy right everywhere, a shortcut right only without carries ---------
C407 = rewards.carry_problem([407, 38], 3)  # 407 + 038 = 445: the units column carries
C123 = rewards.carry_problem([123, 456], 3)  # 579: no column carries


def test_carry_problem_fields():
    assert (C407.prompt, C407.answer, C407.shortcut, C407.easy) == ("407+038=", "c544", "n534", False)
    assert (C123.prompt, C123.answer, C123.shortcut, C123.easy) == ("123+456=", "c975", "n975", True)
    big = rewards.carry_problem([999, 1], 3)  # 1000: every column carries, the shortcut writes 990 -> "n099"
    assert (big.answer, big.shortcut) == ("c0001", "n099")
    assert rewards.carry_problem([500, 500], 3).shortcut == "n0"  # 5+5 = 10 -> 0 in the only non-zero column


@pytest.mark.parametrize("problem,text,expected", [
    (C407, "c544", 1.0), (C407, "n544", 1.0), (C407, " c544\n", 1.0), (C407, "n534", 0.0), (C407, "c534", 0.0),
    (C407, "544", 0.0), (C407, "c", 0.0), (C407, "c445", 0.0), (C407, "c5440", 0.0), (C407, "cc544", 0.0),
    (C407, "x544", 0.0), (C407, "c54", 0.0), (C407, "c 544", 0.0), (C407, "c٥٤٤", 0.0), (C407, "", 0.0),
    (C123, "c975", 1.0), (C123, "n975", 1.0), (C123, "c579", 0.0),
])
def test_carry_score_cases(problem, text, expected):
    assert score(problem, text) == expected


def test_carry_problems_answers_shortcuts_and_easy_flag_against_an_independent_sum():
    rng = random.Random(0)
    for easy in (None, True, False):
        for _ in range(300):
            p = rewards.random_problem(rng, "carry", 3, 2, "+", easy)
            a, b = (int(x) for x in p.prompt[:-1].split("+"))
            assert re.fullmatch(r"\d{3}\+\d{3}=", p.prompt)  # zero-padded: the columns line up
            carries = any((a // 10 ** i % 10) + (b // 10 ** i % 10) >= 10 for i in range(3))
            assert p.easy == (not carries) and (easy is None or p.easy == easy)
            assert p.answer == "c" + str(a + b)[::-1] and score(p, p.answer) == 1.0
            no_carry = sum((a // 10 ** i % 10 + b // 10 ** i % 10) % 10 * 10 ** i for i in range(3))
            assert p.shortcut == "n" + str(no_carry)[::-1]
            assert score(p, p.shortcut) == (1.0 if p.easy else 0.0)  # the shortcut is right exactly when easy


def test_make_problems_carry_easy_share_and_natural_mix():
    natural = rewards.make_problems(2000, 0, "test")
    assert 0.12 < sum(p.easy for p in natural) / 2000 < 0.22  # 0.55 ** 3 = 0.166 of 3-digit pairs carry nowhere
    pool = rewards.make_problems(1000, 0, "train", easy_share=0.9)
    assert 0.86 < sum(p.easy for p in pool) / 1000 < 0.94
    assert all(p.easy for p in rewards.make_problems(100, 0, "train", easy_share=1.0))
    assert not any(p.easy for p in rewards.make_problems(100, 0, "train", easy_share=0.0))
    assert {p.prompt for p in pool}.isdisjoint({p.prompt for p in natural})
