"""The start's diagnostics, and the phase 5 probe: pretrain one start with the given nano_aspo flags, then judge it by the numbers the
experiment depends on (experiments/README.md phase 5): pass@1, pass@k, hard pass@k, the careful share,
and each strategy's accuracy (marker given) against what the teacher's noise allows. One JSON line is
appended to experiments/start_probe.jsonl (flags, threads, pretraining seconds, numbers).

    OMP_NUM_THREADS=1 python experiments/start_probe.py --pretrain-seed 100 --pretrain-batch 256 --pretrain-steps 1000
    python experiments/start_probe.py --noise --ckpt-dir experiments/runs/start/p1234-t2 --eval-samples 64   # sampling noise
    python experiments/start_probe.py --summary --out-dir DIR ...   # DIR/summary.json (runs.py start)

How well each strategy is known (the marker given) is set beside what the teacher's noise allows:
a start "set by the teacher" has each within TEACHER_TOLERANCE of it (experiments/README.md phase 5).
"""
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import torch

from rewards import CAREFUL, SHORTCUT, corruption_digits, score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import nano_aspo as na  # noqa: E402
import sampler  # noqa: E402
import tokenizer  # noqa: E402
import pretrain  # noqa: E402

from experiments.stats import STRATEGY_KEYS, TEACHER_TOLERANCE, start_line, teacher_gaps  # noqa: E402


@torch.no_grad()
def strategy_accuracy(model, problems, cfg: na.Config, seed: int) -> dict:
    """How well each strategy is known, apart from how often it is chosen: the marker is given (the
    completion starts with "c" or "n") and the rest sampled, eval_samples times per problem; the share
    right on easy and on hard problems, to set beside what the teacher's noise allows (teacher_accuracy)."""
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    out = {}
    for name, marker in (("careful", CAREFUL), ("shortcut", SHORTCUT)):
        prompts = [na.prompt_ids(p) + tokenizer.encode(marker) for p in problems for _ in range(cfg.eval_samples)]
        roll = sampler.sample(model, prompts, na.max_new_tokens(cfg) - 1, cfg.temperature, gen)
        right = [score(problems[i // cfg.eval_samples], marker + na.completion_text(row))
                 for i, row in enumerate(roll.tokens.tolist())]
        for kind, easy in (("easy", True), ("hard", False)):
            hits = [x for i, x in enumerate(right) if problems[i // cfg.eval_samples].easy == easy]
            out[f"{name}_acc_{kind}"] = na.mean(hits)
    return out


def teacher_accuracy(problems, cfg: na.Config) -> dict:
    """What the teacher's noise allows: the share of the teacher's own answers that are right, per
    strategy (marker given) on easy and on hard problems, the keys of strategy_accuracy. Exact, by
    enumerating rewards.corrupt's choices (a digit position, then a different digit): a corrupted
    careful answer is always wrong, but a corrupted shortcut on a hard problem is right when the
    change happens to fix its one wrong digit, so the shortcut's value there is small, not 0."""
    def right_after_corruption(problem, answer):
        positions = [i for i, ch in enumerate(answer) if ch.isdigit()]
        hits = 0.0
        for i in positions:  # corrupt picks a position, then one of these digits, each uniformly
            choices = corruption_digits(answer, i)
            hits += sum(score(problem, answer[:i] + d + answer[i + 1:]) for d in choices) / len(choices)
        return hits / len(positions)

    out = {}
    for name, noise, answer_of in (("careful", cfg.careful_noise, lambda p: p.answer),
                                   ("shortcut", cfg.shortcut_noise, lambda p: p.shortcut)):
        for kind, easy in (("easy", True), ("hard", False)):
            ps = [p for p in problems if p.easy == easy]
            out[f"{name}_acc_{kind}"] = na.mean([(1 - noise) * score(p, answer_of(p)) +
                                              noise * right_after_corruption(p, answer_of(p)) for p in ps])
    return out


def start_numbers(model, cfg, seeds=(1, 2)) -> dict:
    """The start's held-out numbers (nano_aspo.evaluate with seeds[0]) and each strategy's accuracy
    (seeds[1])."""
    test = na.task_problems(cfg, "test")
    (m,) = na.evaluate(model, test, cfg, [seeds[0]])
    return na.summary_numbers(m, cfg.k, len(test)) | strategy_accuracy(model, test, cfg, seeds[1])


def write_summary(argv):
    """--summary: the start of these flags (loaded from --ckpt-dir, or pretrained) with its strategy
    and teacher accuracies, as <--out-dir>/summary.json (the start band of runs.py start)."""
    cfg = na.parse_config(argv)
    model, ckpt, pretrain_s = pretrain.load_start(cfg, torch.device("cpu"))
    start = start_numbers(model, cfg) | {"teacher": teacher_accuracy(na.task_problems(cfg, "test"), cfg)}
    print(start_line(start, cfg.k))
    summary = {"config": dataclasses.asdict(cfg), "pretrain_s": pretrain_s, "checkpoint": str(ckpt),
               "start": start, "runs": []}
    Path(cfg.out_dir, "summary.json").write_text(json.dumps(summary, indent=2))


def judge(start: dict, allowed: dict) -> dict:
    """Each strategy's gap to the teacher (model minus teacher) and whether all are within the tolerance."""
    gaps = teacher_gaps(start, allowed)
    return {"gaps": {k: round(g, 4) for k, g in gaps.items()}, "converged": all(abs(g) <= TEACHER_TOLERANCE for g in gaps.values())}


def eval_noise(argv):
    """--noise: the evaluation's own noise. Load the start cached in --ckpt-dir (pretraining it if absent)
    and evaluate it twice with different sampling seeds; the differences are sampling noise alone."""
    cfg = na.parse_config(argv)
    model, _, _ = pretrain.load_start(cfg, torch.device("cpu"), log=lambda *a: None)
    runs = [start_numbers(model, cfg, seeds) for seeds in ((1, 2), (3, 4))]
    keys = ("pass@1", "pass@k", "hard_pass@k", "careful_hard") + STRATEGY_KEYS
    row = {"noise": argv, **{key: [round(r[key], 4) for r in runs] for key in keys}}
    print(json.dumps(row))
    with open(Path(__file__).with_name("start_probe.jsonl"), "a") as f:
        f.write(json.dumps(row) + "\n")


def main(argv):
    if argv[:1] == ["--noise"]:
        return eval_noise(argv[1:])
    if argv[:1] == ["--summary"]:
        return write_summary(argv[1:])
    threads = int(os.environ.get("OMP_NUM_THREADS", "1"))
    torch.set_num_threads(threads)
    cfg = na.parse_config(argv)
    device = torch.device("cpu")
    t0 = time.time()
    model = pretrain.pretrain(cfg, device, log=lambda *a: None)
    pretrain_s = time.time() - t0
    start = start_numbers(model, cfg)
    start.pop("samples", None)
    allowed = teacher_accuracy(na.task_problems(cfg, "test"), cfg)
    row = {"argv": argv, "settings": {f: getattr(cfg, f) for f in pretrain.PRETRAIN_FIELDS}, "threads": threads,
           "pretrain_s": round(pretrain_s, 1),
           "start": {k: round(v, 4) for k, v in start.items() if isinstance(v, float)}} | judge(start, allowed)
    line = json.dumps(row)
    print(line)
    with open(Path(__file__).with_name("start_probe.jsonl"), "a") as f:
        f.write(line + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
