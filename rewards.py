"""The task and its verifier: seeded addition problems with two ways to answer, and a strict 0/1
reward.

A problem is a prompt such as "407+038=" and a canonical answer. The answer is a strategy marker and
the sum's digits least significant first: "c544" (c: careful, with carries) is right for
407+038=445; the teacher's other strategy, "n" (no carries: each column's digit sum mod 10, "n534"),
is right only on problems without a carry (`easy`). A known mixture of a common shortcut and a rare
strategy that is right everywhere: the policy can lock onto the shortcut or learn to carry.

The model sees the prompt and writes a completion; `score` gives 1.0 if the problem accepts the
completion and 0.0 otherwise. The verifier never evaluates text (no eval/exec) and never raises.

Your own task: subclass `Problem` (override `accepts` and, if it has many correct answers,
`random_answer`), draw it in `random_problem`, and give nano_aspo.max_new_tokens its longest answer.
The earlier tasks arith and split were built this way; experiments/README.md names the commit
that still has them.
"""
import functools
import hashlib
import itertools
import random
from dataclasses import dataclass

TEST_PERCENT = 10  # share of all possible prompts that belong to the held-out split


@dataclass(frozen=True)
class Problem:
    """The task interface: a prompt and a canonical answer (what the teacher writes)."""
    prompt: str  # the text the model is conditioned on, e.g. "407+038="
    answer: str  # the canonical correct completion, e.g. "c544"

    def accepts(self, text: str) -> bool:
        """True if `text` (already stripped) is a correct completion: here exactly the answer. A
        task with other correct answers overrides this."""
        return text == self.answer

    def random_answer(self, rng: random.Random) -> str:
        """A correct completion as the teacher writes it; here the one canonical answer."""
        return self.answer


CAREFUL, SHORTCUT = "c", "n"  # the first token of an answer names its strategy


@dataclass(frozen=True)
class CarryProblem(Problem):
    """"407+038=". `answer` is the careful strategy's "c544" (the sum 445, least significant digit
    first: the order in which carries happen, which a causal model can learn); `shortcut` is the
    other strategy's "n534" (each column's digit sum mod 10, no carries), correct exactly when no
    column carries (`easy`). Either marker followed by the right digits is correct: the reward is
    for the answer, the marker only records which way the policy chose."""
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
    # reversed: the most significant digit is last
    no_carry = "".join(str(c % 10) for c in cols).rstrip("0") or "0"
    # fixed width: the columns line up
    prompt = "+".join(str(x).zfill(len(cols)) for x in operands) + "="
    return CarryProblem(prompt, CAREFUL + str(sum(operands))[::-1],
                        shortcut=SHORTCUT + no_carry, easy=max(cols) < 10)


def split_of(prompt: str) -> str:
    """'test' or 'train', decided by a hash of the prompt alone: the two splits are disjoint by
    construction, whatever seed or count generated them."""
    h = int.from_bytes(hashlib.blake2b(prompt.encode(), digest_size=8).digest(), "big")
    return "test" if h % 100 < TEST_PERCENT else "train"


def random_problem(rng: random.Random, digits: int = 3, operands: int = 2,
                   easy: bool | None = None) -> CarryProblem:
    """One problem drawn with `rng` (either split): `operands` numbers, each uniform in
    [0, 10**digits).
    easy=True draws only problems without a carry (each column's digits uniform among those that sum
    below 10), easy=False only problems with one, None the natural mix."""
    while True:  # rejection for easy=False (most 3-digit sums carry, so this is fast)
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


def make_problems(n: int, seed: int, split: str = "train", *, digits: int = 3, operands: int = 2,
                  easy_share: float | None = None) -> list[CarryProblem]:
    """n distinct problems of the given split, deterministic in (seed, split, digits, operands,
    easy_share).
    easy_share: the share of problems without a carry (None: the natural mix, about 17% for two
    3-digit numbers)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if n < 0 or digits < 1 or operands < 2:
        raise ValueError(f"need n >= 0, digits >= 1, operands >= 2 (got n={n}, digits={digits}, "
                         f"operands={operands})")
    if easy_share is not None and not 0 <= easy_share <= 1:
        raise ValueError(f"easy_share must be in [0, 1] (got {easy_share!r})")
    # the key still names the task "carry", as when there were three: the problem sets stay the same
    key = f"{seed}/{split}/carry/{digits}/{operands}"
    rng = random.Random(key + (f"/{easy_share}" if easy_share is not None else ""))
    seen, problems = set(), []
    # bounded: a problem space too small for n distinct problems is an error
    for _ in range(50 * n + 1000):
        if len(problems) == n:
            return problems
        easy = None if easy_share is None else rng.random() < easy_share
        problem = random_problem(rng, digits, operands, easy)
        if problem.prompt in seen or split_of(problem.prompt) != split:
            continue
        seen.add(problem.prompt)
        problems.append(problem)
    if len(problems) < n:
        raise ValueError(f"could not find {n} distinct {split} problems with digits={digits}, "
                         f"operands={operands}")
    return problems


def corrupt(answer: str, rng: random.Random) -> str:
    """A plausible wrong answer: one digit of `answer` replaced by a different digit (the imperfect
    teacher of the pretraining stage). The rule was written for numbers written the usual way (no
    new leading zero), so on answers written least significant digit first it protects the wrong
    end: the units digit never becomes 0 and the last (most significant) digit may ("c544" ->
    "c540"); the verifier rejects both like any wrong answer, so only the teacher's error
    distribution is skewed.
    """
    digit_positions = [i for i, ch in enumerate(answer) if ch.isdigit()]
    i = rng.choice(digit_positions)
    return answer[:i] + rng.choice(corruption_digits(answer, i)) + answer[i + 1:]


def corruption_digits(answer: str, i: int) -> list[str]:
    """The digits `corrupt` may write at position i of `answer` (each equally likely)."""
    leading = i == 0 or not answer[i - 1].isdigit()  # first digit of a number
    more = i + 1 < len(answer) and answer[i + 1].isdigit()
    lowest = "1" if leading and (more or answer[i - 1:i] == "-") else "0"  # no "07", no "-0"
    return [d for d in "0123456789" if d != answer[i] and d >= lowest]


_SURROUNDING = " \n"  # the only characters stripped from both ends of a completion


def score(problem: Problem, completion: str) -> float:
    """1.0 if the completion is a correct answer, else 0.0. Never raises for any completion, never
    evaluates text.

    Rules (strict): the completion is the text the model wrote before its end token. Spaces and
    newlines at both ends are ignored. What remains must be a strategy marker ("c" or "n") followed
    by exactly the sum's digits least significant first, with nothing after them ("c5440" is wrong:
    a leading zero read the usual way); a plain `Problem` accepts exactly its answer.
    Anything that is not a str scores 0.0.
    """
    if not isinstance(completion, str) or not isinstance(problem, Problem):
        return 0.0
    return 1.0 if problem.accepts(completion.strip(_SURROUNDING)) else 0.0
