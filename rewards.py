"""The task and its verifier: seeded arithmetic problems and a strict 0/1 reward.

A problem is a prompt such as "407+38=" (task arith) or "417=" (task split: write 417 as a sum of
positive numbers) and a canonical answer such as "445" or "208+209". The model sees the prompt and
writes a completion; `score` gives 1.0 if the problem accepts the completion and 0.0 otherwise.
The verifier never evaluates text (no eval/exec) and never raises for any completion.
"""
import dataclasses
import hashlib
import random
import re
from dataclasses import dataclass

OPS = "+-*"  # the operators a problem may use
TEST_PERCENT = 10  # share of all possible prompts that belong to the held-out split


def scratchpad(answer: str) -> str:
    """The scratchpad form of an answer: the digits least-significant first, in parentheses, then the
    answer, e.g. "445" -> "(544)445". Written left to right, the reversed sum lets a causal model carry
    as it goes (as by hand); the answer is then a copy of it read backwards."""
    return f"({answer[::-1]}){answer}"


@dataclass(frozen=True)
class Problem:
    prompt: str  # the text the model is conditioned on, e.g. "407+38="
    answer: str  # the canonical correct completion, e.g. "445"
    scratch_ok: bool = False  # whether scratchpad(answer) is a correct completion too

    def accepts(self, text: str) -> bool:
        """True if `text` (already stripped) is a correct completion: exactly the answer, or exactly its
        scratchpad form where the task allows it. A task with other correct answers overrides this."""
        return text == self.answer or (self.scratch_ok and text == scratchpad(self.answer))

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


TASKS = ("arith", "split")


def make_problems(n: int, seed: int, split: str = "train", digits: int = 2, operands: int = 2,
                  ops: str = "+", scratch: bool = False, task: str = "arith") -> list[Problem]:
    """n distinct problems of the given split, deterministic in (seed, split, difficulty).

    task "arith": evaluate an expression. Difficulty knobs: `digits` (each operand is uniform in
    [0, 10**digits)), `operands` (how many numbers), `ops` (the operators to draw from, a subset of
    "+-*"). `scratch` makes the scratchpad form a second correct completion of every problem.
    task "split": write N (uniform in [10**(digits-1), 10**digits)) as a sum of `operands` positive
    numbers; `ops` and `scratch` do not apply.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if n < 0 or digits < 1 or operands < 2:
        raise ValueError(f"need n >= 0, digits >= 1, operands >= 2 (got n={n}, digits={digits}, operands={operands})")
    if not ops or any(op not in OPS for op in ops):
        raise ValueError(f"ops must be a non-empty subset of {OPS!r}, got {ops!r}")
    rng = random.Random(f"{seed}/{split}/{digits}/{operands}/{ops}/{task}")
    seen, problems = set(), []
    for _ in range(50 * n + 1000):  # bounded: a problem space too small for n distinct problems is an error
        if len(problems) == n:
            return problems
        if task == "split":
            target = rng.randrange(max(10 ** (digits - 1), operands), 10 ** digits)
            problem = SplitProblem(f"{target}=", "", parts=operands)
            problem = dataclasses.replace(problem, answer=problem.random_answer(rng))
        else:
            xs = [rng.randrange(10 ** digits) for _ in range(operands)]
            os_ = "".join(rng.choice(ops) for _ in range(operands - 1))
            prompt = "".join(f"{x}{o}" for x, o in zip(xs, os_)) + f"{xs[-1]}="
            problem = Problem(prompt, str(evaluate(xs, os_)), scratch)
        if problem.prompt in seen or split_of(problem.prompt) != split:
            continue
        seen.add(problem.prompt)
        problems.append(problem)
    if len(problems) < n:
        raise ValueError(f"could not find {n} distinct {split} problems with digits={digits}, operands={operands}, ops={ops!r}")
    return problems


def corrupt(answer: str, rng: random.Random) -> str:
    """A plausible wrong answer: one digit of `answer` replaced by a different digit (the imperfect
    teacher of the pretraining stage). No leading zero and no "-0" is introduced; a one-digit part
    of a split answer may become 0 ("5+52" -> "0+52"), which the verifier rejects like any wrong sum."""
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
    newlines at both ends are ignored. Task split (SplitProblem.accepts): what remains must be
    `parts` positive ASCII decimal integers without leading zeros joined by '+', summing to N.
    Task arith (Problem.accepts): what remains must be exactly the canonical answer: decimal
    ASCII digits with an optional leading '-', no leading zeros ("07" is wrong, "0" is right), no
    '+', no inner whitespace, nothing after the number. Where the task allows the scratchpad, its
    exact form "(<answer reversed>)<answer>" is correct too, and any other scratchpad is wrong.
    Anything that is not a str scores 0.0.
    """
    if not isinstance(completion, str) or not isinstance(problem, Problem):
        return 0.0
    return 1.0 if problem.accepts(completion.strip(_SURROUNDING)) else 0.0
