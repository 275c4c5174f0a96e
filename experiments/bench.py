"""Speed benchmark (not a test): sampling with and without the KV cache, then the phase split of a
demo run: pretraining, one RL step (rollout and update), and the held-out evaluations (the full set
at the start and end, the curve subset in between), on the current device with the demo's settings.

    python experiments/bench.py                 # defaults of nano_aspo.py
    python experiments/bench.py --device cuda   # any nano_aspo.py flag is accepted
    python experiments/bench.py --members 1,4,16,64   # instead: one RL step of S runs batched vs one after another
"""
import math
import random
import sys
import time

from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: nano_aspo.py and its modules
import nano_aspo as na  # noqa: E402
import sampler  # noqa: E402
import pretrain  # noqa: E402
from batched import StackedGPT  # noqa: E402
from model import GPT  # noqa: E402


def timed(fn, repeats):
    fn()  # warm-up
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / repeats, out


def members_bench(cfg, device, sizes):
    """Per-run time of one RL step (rollout and mu updates), S (method, seed) runs as one batched model
    (nano_aspo's batched path) against the same S runs one after another (--no-batch-seeds), as ratios
    measured side by side in this process: the least wall and CPU time of interleaved trials."""
    base = GPT(na.model_config(cfg)).to(device).state_dict()  # untrained: every completion runs to full length
    pool = na.task_problems(cfg, "train")
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, {cfg.prompts} prompts x "
          f"{cfg.group} samples, mu = {cfg.mu}")
    for S in sizes:
        methods = [("grpo", "aspo")[s % 2] for s in range(S)]
        batches = [random.Random(s).sample(pool, cfg.prompts) for s in range(S)]
        gens = [torch.Generator(device=device).manual_seed(s) for s in range(S)]
        stacked = StackedGPT(na.model_config(cfg), [base] * S)
        alone = [StackedGPT(na.model_config(cfg), [base]) for _ in range(S)]
        opt = torch.optim.AdamW(stacked.parameters(), lr=cfg.lr)
        opts = [torch.optim.AdamW(m.parameters(), lr=cfg.lr) for m in alone]
        batched = lambda: na.rl_step(stacked, opt, batches, cfg, methods, gens)
        one_by_one = lambda: [na.rl_step(m, o, [b], cfg, [method], [g])
                              for m, o, b, method, g in zip(alone, opts, batches, methods, gens)]
        (wall_b, wall_1), (cpu_b, cpu_1) = fastest([batched, one_by_one], 2)
        print(f"S={S:3d}: {wall_1 / S * 1e3:7.1f} ms per run one after another, {wall_b / S * 1e3:7.1f} ms batched: "
              f"{wall_1 / wall_b:5.2f}x (CPU time {cpu_1 / cpu_b:5.2f}x)")


def fastest(fns, trials):
    """The least wall and the least CPU time (this process, all its threads) of each function over `trials`
    interleaved runs, after one warm-up each: on a shared machine the least disturbed run is the best
    estimate, and interleaving exposes both to the same load."""
    wall, cpu = [math.inf] * len(fns), [math.inf] * len(fns)
    for trial in range(trials + 1):
        for i, fn in enumerate(fns):
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            if trial:  # the first round warms up
                wall[i], cpu[i] = min(wall[i], time.perf_counter() - t0), min(cpu[i], time.process_time() - c0)
    return wall, cpu


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    sizes = None
    if "-h" in argv or "--help" in argv:  # then nano_aspo.py's flags, which bench.py takes as well
        print("bench.py's own flag:\n  --members S,S,...  one RL step of S runs batched against the same runs one "
              "after another, instead of the phase split\nand every flag of nano_aspo.py:")
    if "--members" in argv:  # bench.py's own flag; the rest are nano_aspo.py's
        i = argv.index("--members")
        try:
            sizes = [int(n) for n in argv[i + 1].split(",")]
        except (IndexError, ValueError):
            raise ValueError("--members must be comma-separated member counts, e.g. 1,4,16,64") from None
        del argv[i:i + 2]
    cfg = na.parse_config(argv)
    device = na.pick_device(cfg.device)
    if sizes:
        return members_bench(cfg, device, sizes)
    torch.manual_seed(0)
    model = GPT(na.model_config(cfg)).to(device).eval()
    problems = na.task_problems(cfg, "train")[:cfg.prompts]
    prompts = [na.prompt_ids(p) for p in problems for _ in range(cfg.group)]
    T = na.max_new_tokens(cfg)
    print(f"device {device}, {model.num_params():,} parameters, batch {len(prompts)} x {T} new tokens, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    # an untrained model rarely emits EOS, so every row runs to max_new_tokens: a fair token count
    for name, use_cache in (("KV cache", True), ("recompute", False)):
        gen = torch.Generator(device=device).manual_seed(0)
        sec, roll = timed(lambda: sampler.sample(model, prompts, T, cfg.temperature, gen, use_cache), 20)
        tps = roll.mask.sum().item() / sec
        print(f"sampling ({name:9s}): {tps:10,.0f} tokens/s  ({sec * 1e3:6.1f} ms per batch)")
        if use_cache:
            cached = tps
    print(f"KV cache speed-up: {cached / tps:.2f}x")

    # the verifier on completions far longer than a policy writes (tests/test_verifier.py: the scores)
    p = problems[0]
    huge = ["c" + "5" * 1_000_000, p.answer * 100_000, " " * 100_000 + p.answer + "\n" * 100_000]
    sec, _ = timed(lambda: [na.score(p, text) for text in huge], 5)
    print(f"verifier: three completions of 0.2-1 M characters scored in {sec * 1e3:.1f} ms")

    rng = random.Random(0)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.pretrain_lr)

    sec, _ = timed(lambda: pretrain.supervised_step(model, opt, *pretrain.teacher_batch(cfg, cfg.pretrain_batch, rng, device)), 50)
    print(f"pretraining: {1 / sec:.1f} steps/s of {cfg.pretrain_batch} sequences "
          f"({cfg.pretrain_steps} steps ~ {cfg.pretrain_steps * sec:.1f} s)")

    policy = StackedGPT(model.config, [model])  # the RL step trains members; one here
    rl_opt = torch.optim.AdamW(policy.parameters(), lr=cfg.lr)
    gen = torch.Generator(device=device).manual_seed(0)
    times = [na.rl_step(policy, rl_opt, [problems], cfg, ["aspo"], [gen])[1] for _ in range(6)][1:]
    roll_s = sum(t["rollout_s"] for t in times) / len(times)
    upd_s = sum(t["update_s"] for t in times) / len(times)
    print(f"one RL step ({cfg.prompts} prompts x {cfg.group} samples, mu = {cfg.mu}): "
          f"rollout {roll_s * 1e3:.1f} ms + update {upd_s * 1e3:.1f} ms = {(roll_s + upd_s) * 1e3:.1f} ms "
          f"({cfg.steps} steps ~ {cfg.steps * (roll_s + upd_s):.1f} s per method)")

    test = na.task_problems(cfg, "test")
    full, _ = timed(lambda: na.evaluate(model, test, cfg, [1]), 2)
    curve, _ = timed(lambda: na.evaluate(model, test[:cfg.curve_problems], cfg, [1]), 3)
    n_curve = (cfg.steps - 1) // cfg.eval_every  # the evaluations before the final one
    print(f"evaluation: full set ({len(test)} problems x {cfg.eval_samples} samples) {full:.2f} s, curve subset "
          f"({cfg.curve_problems} problems) {curve:.2f} s; per method ~ {full + n_curve * curve:.1f} s, "
          f"plus the start {full:.1f} s once")


if __name__ == "__main__":
    try:
        main()
    except ValueError as e:
        print(f"bench.py: error: {e}", file=sys.stderr)
        sys.exit(2)
