"""Phase 5 probe: pretrain one start with the given nano_aspo flags, then judge it by the numbers the
experiment depends on (experiments/README.md phase 5): pass@1, pass@k, hard pass@k, the careful share,
and each strategy's accuracy (marker given) against what the teacher's noise allows. One JSON line is
appended to experiments/start_probe.jsonl (flags, threads, pretraining seconds, numbers).

    OMP_NUM_THREADS=1 python experiments/start_probe.py --pretrain-seed 100 --pretrain-batch 256 --pretrain-steps 1000
    python experiments/start_probe.py --noise --ckpt-dir experiments/runs/start/p1234-t2 --eval-samples 64   # sampling noise
"""
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import nano_aspo as na  # noqa: E402

from experiments.stats import STRATEGY_KEYS, TEACHER_TOLERANCE, teacher_gaps  # noqa: E402


def judge(start: dict, allowed: dict) -> dict:
    """Each strategy's gap to the teacher (model minus teacher) and whether all are within the tolerance."""
    gaps = teacher_gaps(start, allowed)
    return {"gaps": {k: round(g, 4) for k, g in gaps.items()}, "converged": all(abs(g) <= TEACHER_TOLERANCE for g in gaps.values())}


def eval_noise(argv):
    """--noise: the evaluation's own noise. Load the start cached in --ckpt-dir (pretraining it if absent)
    and evaluate it twice with different sampling seeds; the differences are sampling noise alone."""
    cfg = na.parse_config(argv)
    model, _, _ = na.load_or_pretrain(cfg, torch.device("cpu"), log=lambda *a: None)
    test = na.task_problems(cfg, "test")
    runs = [na.held_out_numbers(na.evaluate(model, test, cfg, seed=a), cfg.k, len(test))
            | na.strategy_accuracy(model, test, cfg, seed=b) for a, b in ((1, 2), (3, 4))]
    keys = ("pass@1", "pass@k", "hard_pass@k", "careful_hard") + STRATEGY_KEYS
    row = {"noise": argv, **{key: [round(r[key], 4) for r in runs] for key in keys}}
    print(json.dumps(row))
    with open(Path(__file__).with_name("start_probe.jsonl"), "a") as f:
        f.write(json.dumps(row) + "\n")


def main(argv):
    if argv[:1] == ["--noise"]:
        return eval_noise(argv[1:])
    threads = int(os.environ.get("OMP_NUM_THREADS", "1"))
    torch.set_num_threads(threads)
    cfg = na.parse_config(argv)
    device = torch.device("cpu")
    t0 = time.time()
    model = na.pretrain(cfg, device, log=lambda *a: None)
    pretrain_s = time.time() - t0
    test = na.task_problems(cfg, "test")
    start = na.held_out_numbers(na.evaluate(model, test, cfg, seed=1), cfg.k, len(test))
    start |= na.strategy_accuracy(model, test, cfg, seed=2)
    start.pop("samples", None)
    allowed = na.teacher_accuracy(test, cfg)
    row = {"argv": argv, "settings": {f: getattr(cfg, f) for f in na.PRETRAIN_FIELDS}, "threads": threads,
           "pretrain_s": round(pretrain_s, 1),
           "start": {k: round(v, 4) for k, v in start.items() if isinstance(v, float)}} | judge(start, allowed)
    line = json.dumps(row)
    print(line)
    with open(Path(__file__).with_name("start_probe.jsonl"), "a") as f:
        f.write(line + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
