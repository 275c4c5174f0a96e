"""Speed benchmark (not a test): sampling with and without the KV cache, then the phase split of a
demo run: pretraining, one RL step (rollout and update), and the held-out evaluations (the full set
at the start and end, the curve subset in between), on the current device with the demo's settings.

    python bench.py                 # defaults of nano_aspo.py
    python bench.py --device cuda   # any nano_aspo.py flag is accepted
    python bench.py --members 1,4,16,64   # instead: S members batched (batched.py) vs S models one at a time
    OMP_NUM_THREADS=1 python bench.py --members 16   # the same on one thread
"""
import random
import sys
import time

import torch
import torch.nn.functional as F

import nano_aspo as na
from batched import StackedGPT, multinomial_per_member
from model import GPT


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


def fastest(fns, trials):
    """The least wall and the least CPU time (this process, all its threads) of each function over `trials`
    interleaved runs, after one warm-up each: on a shared machine the least disturbed run is the best
    estimate, interleaving exposes all to the same load, and CPU time leaves out the waits for a core."""
    for fn in fns:
        fn()
    wall, cpu = [float("inf")] * len(fns), [float("inf")] * len(fns)
    for _ in range(trials):
        for i, fn in enumerate(fns):
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            wall[i] = min(wall[i], time.perf_counter() - t0)
            cpu[i] = min(cpu[i], time.process_time() - c0)
    return wall, cpu


def members_bench(cfg, device, sizes):
    """Per-model time of an update (forward, backward, clip, AdamW on a minibatch of one RL step) and of the
    sampler (one rollout batch), S members as one StackedGPT vs the same S GPTs one after another."""
    mcfg = na.model_config(cfg)
    rows = cfg.prompts * cfg.group // cfg.minibatches  # sequences per member per minibatch
    T = na.max_new_tokens(cfg)
    pool = na.task_problems(cfg, "train")
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads; update: {rows} sequences "
          f"x {mcfg.block_size - 1} tokens per member, sampler: {cfg.prompts} prompts x {cfg.group} x {T} new tokens")
    for S in sizes:
        models = []
        for s in range(S):
            torch.manual_seed(s)
            models.append(GPT(mcfg).to(device))
        stacked = StackedGPT(mcfg, models)
        seq = torch.randint(0, mcfg.vocab_size, (S * rows, mcfg.block_size), device=device)
        x, y = seq[:, :-1], seq[:, 1:]

        def step(model, opt, x, y, n):  # n members in `model`, rows member-major
            loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten(), reduction="none").view(n, -1).mean(1)
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()  # the sum of the members' losses: each member gets its own gradient
            if n > 1:
                model.clip_grad_norm_(cfg.grad_clip)
            else:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()

        opts = [torch.optim.AdamW(m.parameters(), lr=cfg.lr) for m in models]
        stacked_opt = torch.optim.AdamW(stacked.parameters(), lr=cfg.lr)
        (one, many), (one_c, many_c) = fastest([lambda: [step(m, o, x[s * rows:(s + 1) * rows], y[s * rows:(s + 1) * rows], 1)
                                      for s, (m, o) in enumerate(zip(models, opts))],
                             lambda: step(stacked, stacked_opt, x, y, S)], max(2, 16 // S))

        prompts = [[na.prompt_ids(p) for p in random.Random(s).sample(pool, cfg.prompts) for _ in range(cfg.group)]
                   for s in range(S)]
        gen = torch.Generator(device=device).manual_seed(0)
        (one_s, many_s), (one_sc, many_sc) = fastest([lambda: [na.sample(m, p, T, cfg.temperature, gen) for m, p in zip(models, prompts)],
                                 lambda: na.sample(stacked, sum(prompts, []), T, cfg.temperature, gen)],
                                max(2, 8 // S))
        # what per-member sampling generators would add: one multinomial per member slice at each decode step
        probs = torch.rand(S * cfg.prompts * cfg.group, mcfg.vocab_size, device=device).softmax(-1)
        gens = [torch.Generator(device=device).manual_seed(s) for s in range(S)]
        _, (shared, per) = fastest([lambda: torch.multinomial(probs, 1, generator=gen),
                                    lambda: multinomial_per_member(probs, gens)], 20)
        print(f"S={S:3d}  update {one / S * 1e3:6.2f} -> {many / S * 1e3:6.2f} ms per model ({one / many:5.2f}x, "
              f"CPU time {one_c / many_c:5.2f}x)   sampler {one_s / S * 1e3:6.2f} -> {many_s / S * 1e3:6.2f} ms "
              f"({one_s / many_s:5.2f}x, CPU time {one_sc / many_sc:5.2f}x)   per-member generators "
              f"+{(per - shared) * 1e3:.2f} ms CPU per decode step, +{(per - shared) * T / many_sc:.1%} of the batched sampler")


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    sizes = None
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
        sec, roll = timed(lambda: na.sample(model, prompts, T, cfg.temperature, gen, use_cache), 20)
        tps = roll.mask.sum().item() / sec
        print(f"sampling ({name:9s}): {tps:10,.0f} tokens/s  ({sec * 1e3:6.1f} ms per batch)")
        if use_cache:
            cached = tps
    print(f"KV cache speed-up: {cached / tps:.2f}x")

    rng = random.Random(0)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.pretrain_lr)

    def pretrain_step():
        x, y = na.teacher_batch(cfg, cfg.pretrain_batch, rng, device)
        loss = torch.nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten(), ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        opt.step()

    sec, _ = timed(pretrain_step, 50)
    print(f"pretraining: {1 / sec:.1f} steps/s of {cfg.pretrain_batch} sequences "
          f"({cfg.pretrain_steps} steps ~ {cfg.pretrain_steps * sec:.1f} s)")

    rl_opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    gen = torch.Generator(device=device).manual_seed(0)
    times = [na.rl_step(model, rl_opt, problems, cfg, "aspo", gen)[1] for _ in range(6)][1:]
    roll_s = sum(t["rollout_s"] for t in times) / len(times)
    upd_s = sum(t["update_s"] for t in times) / len(times)
    print(f"one RL step ({cfg.prompts} prompts x {cfg.group} samples, mu = {cfg.mu}): "
          f"rollout {roll_s * 1e3:.1f} ms + update {upd_s * 1e3:.1f} ms = {(roll_s + upd_s) * 1e3:.1f} ms "
          f"({cfg.steps} steps ~ {cfg.steps * (roll_s + upd_s):.1f} s per method)")

    test = na.task_problems(cfg, "test")
    full, _ = timed(lambda: na.evaluate(model, test, cfg, seed=1), 2)
    curve, _ = timed(lambda: na.evaluate(model, test[:cfg.curve_problems], cfg, seed=1), 3)
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
