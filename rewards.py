"""The task and its verifier: seeded arithmetic problems and a strict 0/1 reward.

A problem is a prompt such as "407+038=" and a canonical answer. Three tasks:
- carry (the default): add two numbers; the answer is a strategy marker and the sum's digits least
  significant first: "c544" (c: careful, with carries) is right for 407+038=445; the teacher's other
  strategy, "n" (no carries: each column's digit sum mod 10, "n534"), is right only on problems
  without a carry. A known mixture of a common shortcut and a rare strategy that is right everywhere.
- arith: compute an expression ("407+38=" -> "445").
- split: write N as a sum of positive numbers ("417=" -> "208+209"; many correct answers).
The model sees the prompt and writes a completion; `score` gives 1.0 if the problem accepts the
completion and 0.0 otherwise.
The verifier never evaluates text (no eval/exec) and never raises for any completion.
"""
import dataclasses
import functools
import hashlib
import itertools
import random
import re
from dataclasses import dataclass

OPS = "+-*"  # the operators a problem may use
TEST_PERCENT = 10  # share of all possible prompts that belong to the held-out split


@dataclass(frozen=True)
class Problem:
    prompt: str  # the text the model is conditioned on, e.g. "407+38="
    answer: str  # the canonical correct completion, e.g. "445"

    def accepts(self, text: str) -> bool:
        """True if `text` (already stripped) is a correct completion: here exactly the answer. A task
        with other correct answers overrides this."""
        return text == self.answer

    def random_answer(self, rng: random.Random) -> str:
        """A correct completion as the teacher writes it; here the one canonical answer."""
        return self.answer


@dataclass(frozen=True)
class SplitProblem(Problem):
    """A task with many correct answers: write the number N of the prompt "N=" as a sum of `parts`
    positive integers, e.g. "57=" -> "23+34" or "50+7". `answer` is one of them (the teacher's)."""
    parts: int = 2

    def accepts(self, text: str) -> bool:
        terms = text.split("+")
        if len(terms) != self.parts or not all(re.fullmatch(r"[1-9][0-9]{0,20}", t, flags=re.ASCII) for t in terms):
            return False  # wrong count, empty, zero, leading zero, non-ASCII digit, or absurdly long
        return sum(map(int, terms)) == int(self.prompt[:-1])

    def random_answer(self, rng: random.Random) -> str:
        """A uniformly random correct split (the imperfect teacher's answers are diverse)."""
        n = int(self.prompt[:-1])
        cuts = sorted(rng.sample(range(1, n), self.parts - 1))
        return "+".join(str(b - a) for a, b in zip([0] + cuts, cuts + [n]))


CAREFUL, SHORTCUT = "c", "n"  # the first token of a carry-task answer names its strategy


@dataclass(frozen=True)
class CarryProblem(Problem):
    """Task carry: "407+038=". `answer` is the careful strategy's "c544" (the sum 445, least significant
    digit first: the order in which carries happen, which a causal model can learn); `shortcut` is the
    other strategy's "n534" (each column's digit sum mod 10, no carries), correct exactly when no column
    carries (`easy`). Either marker followed by the right digits is correct: the reward is for the
    answer, the marker only records which way the policy chose."""
    shortcut: str = ""
    easy: bool = False

    def accepts(self, text: str) -> bool:
        return len(text) >= 2 and text[0] in (CAREFUL, SHORTCUT) and text[1:] == self.answer[1:]


def column_sums(operands: list[int], width: int = 0) -> list[int]:
    """Digit sums per column, least significant first: [407, 38] -> [15, 3, 4]."""
    width = max(width, *(len(str(x)) for x in operands))
    return [sum(x // 10 ** i % 10 for x in operands) for i in range(width)]


def carry_problem(operands: list[int], width: int = 0) -> CarryProblem:
    """The problem of adding `operands`, each written with at least `width` digits (zero-padded)."""
    cols = column_sums(operands, width)
    no_carry = "".join(str(c % 10) for c in cols).rstrip("0") or "0"  # reversed: the most significant digit is last
    prompt = "+".join(str(x).zfill(len(cols)) for x in operands) + "="  # fixed width: the columns line up
    return CarryProblem(prompt, CAREFUL + str(sum(operands))[::-1],
                        shortcut=SHORTCUT + no_carry, easy=max(cols) < 10)


def evaluate(operands: list[int], ops: str) -> int:
    """Value of operands[0] ops[0] operands[1] ... with the usual precedence (* before + and -)."""
    terms, signs = [operands[0]], [1]
    for op, x in zip(ops, operands[1:]):
        if op == "*":
            terms[-1] *= x
        else:
            terms.append(x)
            signs.append(1 if op == "+" else -1)
    return sum(s * t for s, t in zip(signs, terms))


def split_of(prompt: str) -> str:
    """'test' or 'train', decided by a hash of the prompt alone: the two splits are disjoint by
    construction, whatever seed or count generated them."""
    h = int.from_bytes(hashlib.blake2b(prompt.encode(), digest_size=8).digest(), "big")
    return "test" if h % 100 < TEST_PERCENT else "train"


TASKS = ("carry", "arith", "split")


def random_problem(rng: random.Random, task: str = "carry", digits: int = 3, operands: int = 2, ops: str = "+",
                   easy: bool | None = None) -> Problem:
    """One problem of the task, drawn with `rng` (either split).

    carry: `operands` numbers, each uniform in [0, 10**digits); easy=True draws only problems without a
    carry (each column's digits uniform among those that sum below 10), easy=False only problems with
    one, None the natural mix. arith: an expression over `ops` (a subset of "+-*"), operands as carry.
    split: write N (uniform in [10**(digits-1), 10**digits)) as a sum of `operands` positive numbers.
    """
    if task == "split":
        target = rng.randrange(max(10 ** (digits - 1), operands), 10 ** digits)
        problem = SplitProblem(f"{target}=", "", parts=operands)
        return dataclasses.replace(problem, answer=problem.random_answer(rng))
    if task == "arith":
        xs = [rng.randrange(10 ** digits) for _ in range(operands)]
        os_ = "".join(rng.choice(ops) for _ in range(operands - 1))
        return Problem("".join(f"{x}{o}" for x, o in zip(xs, os_)) + f"{xs[-1]}=", str(evaluate(xs, os_)))
    while True:  # carry; rejection for easy=False (most 3-digit sums carry, so this is fast)
        if easy:
            columns = [rng.choice(_carry_free_columns(operands)) for _ in range(digits)]
            xs = [sum(col[j] * 10 ** i for i, col in enumerate(columns)) for j in range(operands)]
        else:
            xs = [rng.randrange(10 ** digits) for _ in range(operands)]
        problem = carry_problem(xs, digits)
        if easy is None or problem.easy == easy:
            return problem


@functools.cache
def _carry_free_columns(operands: int) -> list[tuple[int, ...]]:
    """Every column of `operands` digits whose sum is below 10 (no carry), in a fixed order."""
    return [ds for ds in itertools.product(range(10), repeat=operands) if sum(ds) < 10]


def make_problems(n: int, seed: int, split: str = "train", *, task: str = "carry", digits: int = 3,
                  operands: int = 2, ops: str = "+", easy_share: float | None = None) -> list[Problem]:
    """n distinct problems of the given split, deterministic in (seed, split, task settings).

    easy_share (carry only): the share of problems without a carry (None: the natural mix, about
    17% for two 3-digit numbers). See random_problem for the tasks and their knobs.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if n < 0 or digits < 1 or operands < 2:
        raise ValueError(f"need n >= 0, digits >= 1, operands >= 2 (got n={n}, digits={digits}, operands={operands})")
    if not ops or any(op not in OPS for op in ops):
        raise ValueError(f"ops must be a non-empty subset of {OPS!r}, got {ops!r}")
    if easy_share is not None and not (task == "carry" and 0 <= easy_share <= 1):
        raise ValueError(f"easy_share applies to task carry only, in [0, 1] (got {easy_share!r} for {task})")
    key = f"{seed}/{split}/{task}/{digits}/{operands}" + (f"/{ops}" if task == "arith" else "")
    rng = random.Random(key + (f"/{easy_share}" if easy_share is not None else ""))
    seen, problems = set(), []
    for _ in range(50 * n + 1000):  # bounded: a problem space too small for n distinct problems is an error
        if len(problems) == n:
            return problems
        easy = None if easy_share is None else rng.random() < easy_share
        problem = random_problem(rng, task, digits, operands, ops, easy)
        if problem.prompt in seen or split_of(problem.prompt) != split:
            continue
        seen.add(problem.prompt)
        problems.append(problem)
    if len(problems) < n:
        raise ValueError(f"could not find {n} distinct {split} problems with task={task}, digits={digits}, "
                         f"operands={operands}" + (f", ops={ops!r}" if task == "arith" else ""))
    return problems


def corrupt(answer: str, rng: random.Random) -> str:
    """A plausible wrong answer: one digit of `answer` replaced by a different digit (the imperfect
    teacher of the pretraining stage). No leading zero and no "-0" is introduced; a one-digit part
    of a split answer may become 0 ("5+52" -> "0+52"), which the verifier rejects like any wrong sum.
    On carry answers, written least significant digit first, the rule protects the wrong end: the
    units digit never becomes 0 and the last (most significant) digit may ("c544" -> "c540"); the
    verifier rejects both like any wrong answer, so only the teacher's error distribution is skewed.
    """
    digit_positions = [i for i, ch in enumerate(answer) if ch.isdigit()]
    i = rng.choice(digit_positions)
    leading = i == 0 or not answer[i - 1].isdigit()  # first digit of a number
    more = i + 1 < len(answer) and answer[i + 1].isdigit()
    lowest = "1" if leading and (more or answer[i - 1:i] == "-") else "0"  # no "07", no "-0"
    choices = [d for d in "0123456789" if d != answer[i] and d >= lowest]
    return answer[:i] + rng.choice(choices) + answer[i + 1:]


_SURROUNDING = " \n"  # the only characters stripped from both ends of a completion


def score(problem: Problem, completion: str) -> float:
    """1.0 if the completion is a correct answer, else 0.0. Never raises for any completion, never
    evaluates text.

    Rules (strict): the completion is the text the model wrote before its end token. Spaces and
    newlines at both ends are ignored. Task carry (CarryProblem.accepts): what remains must be a
    strategy marker ("c" or "n") followed by exactly the sum's digits least significant first, with
    nothing after them ("c5440" is wrong: a leading zero read the usual way). Task split
    (SplitProblem.accepts): `parts` positive ASCII decimal integers without leading zeros joined by
    '+', summing to N. Task arith (Problem.accepts): exactly the canonical answer: decimal ASCII
    digits with an optional leading '-', no leading zeros ("07" is wrong, "0" is right), no '+', no
    inner whitespace, nothing after the number.
    Anything that is not a str scores 0.0.
    """
    if not isinstance(completion, str) or not isinstance(problem, Problem):
        return 0.0
    return 1.0 if problem.accepts(completion.strip(_SURROUNDING)) else 0.0
