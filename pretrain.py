"""The start policy: supervised training on an imperfect teacher, and the start it makes.

The teacher answers each problem the careful way (right everywhere) with probability
--careful-share and by the shortcut otherwise, each way corrupted at its own noise rate; the policy
learns its mixture from fresh training-split problems every step (warm-up, cosine decay). Every RL
run starts from this policy. The default settings' start ships with the code (assets/start.pt),
so the start is the same on every machine; it was made by, and is only ever rewritten by,

    python pretrain.py --rebuild      # 4000 steps on one thread: minutes on a laptop CPU

Other settings, or nano_aspo.py --pretrain, pretrain here and cache the start (load_start).
"""
import argparse
import dataclasses
import hashlib
import json
import sys
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from config import Config, model_config
from model import GPT, load_checkpoint, save_checkpoint
from rewards import CarryProblem, Problem, corrupt, random_problem, split_of
from tokenizer import EOS, PAD, encode, prompt_ids

def teacher_answer(problem: Problem, rng: random.Random, cfg: Config) -> str:
    """The teacher picks the careful way (right everywhere) with probability --careful-share, else
    the shortcut (right only without carries), and corrupts one digit at that way's noise rate."""
    answer, noise = problem.random_answer(rng), cfg.shortcut_noise
    if isinstance(problem, CarryProblem) and rng.random() >= cfg.careful_share:
        answer = problem.shortcut
    elif isinstance(problem, CarryProblem):
        noise = cfg.careful_noise
    return corrupt(answer, rng) if rng.random() < noise else answer


def teacher_batch(cfg: Config, batch: int, rng: random.Random, device):
    """Fresh training-split problems (never a held-out prompt) as BOS prompt answer EOS: inputs
    (b, L) and targets (b, L), -100 where no loss applies (the prompt, the padding)."""
    seqs, starts = [], []
    while len(seqs) < batch:
        problem = random_problem(rng, cfg.digits, cfg.operands)
        if split_of(problem.prompt) != "train":
            continue
        p = prompt_ids(problem)
        seqs.append(p + encode(teacher_answer(problem, rng, cfg)) + [EOS])
        starts.append(len(p))
    L = max(map(len, seqs))
    x = torch.tensor([s + [PAD] * (L - len(s)) for s in seqs])  # (b, L), right-padded
    pos = torch.arange(1, L)  # position of each target token
    starts, ends = torch.tensor(starts)[:, None], torch.tensor([len(s) for s in seqs])[:, None]
    y = x[:, 1:].masked_fill((pos < starts) | (pos >= ends), -100)  # learn the completion only
    return x[:, :-1].to(device), y.to(device)


def supervised_step(model: GPT, optimizer, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One step of next-token cross-entropy on the teacher's completions (-100 is ignored)."""
    loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten(), ignore_index=-100)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss


def pretrain(cfg: Config, device, log=print, losses: list | None = None, steps: int = 0) -> GPT:
    """Supervised training on the teacher's answers, fresh problems every step, warm-up then cosine
    decay: the start policy mixes the teacher's two ways, the careful one rare (§10). losses: a list
    that gets every step's loss; steps: stop after this many (0: all of them)."""
    torch.manual_seed(cfg.pretrain_seed)
    rng = random.Random(cfg.pretrain_seed)
    model = GPT(model_config(cfg)).to(device)
    log(f"pretraining a {model.num_params():,}-parameter GPT for {cfg.pretrain_steps} steps of "
        f"{cfg.pretrain_batch} (careful share {cfg.careful_share}; noise: careful "
        f"{cfg.careful_noise}, shortcut {cfg.shortcut_noise})")
    # OneCycleLR also cycles Adam's beta1 between 0.85 and 0.95: the 0.9 is only its start value
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.pretrain_lr, weight_decay=0.01,
                                  betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.pretrain_lr,
                                                total_steps=cfg.pretrain_steps, pct_start=0.05)
    for step in range(steps or cfg.pretrain_steps):
        batch = teacher_batch(cfg, cfg.pretrain_batch, rng, device)
        loss = supervised_step(model, optimizer, *batch)
        sched.step()
        if losses is not None:
            losses.append(loss.item())
        if step % 200 == 0 or step == cfg.pretrain_steps - 1:
            log(f"  pretrain step {step:4d}  loss {loss.item():.3f}")
    return model


PRETRAIN_FIELDS = ("digits", "operands", "n_layer", "n_head", "n_embd", "careful_share",
                   "careful_noise", "shortcut_noise", "pretrain_steps", "pretrain_batch",
                   "pretrain_lr", "pretrain_seed")


def settings(cfg: Config) -> dict:
    """The settings that shape the start (the flags of PRETRAIN_FIELDS)."""
    return {f: getattr(cfg, f) for f in PRETRAIN_FIELDS}


# --- the start's key: what pretraining computes, so that a stale start is never used silently ----
SHIPPED = Path(__file__).resolve().with_name("assets") / "start.pt"
REBUILD = "python pretrain.py --rebuild"
REBUILD_THREADS = 1  # the rebuild's thread count: another count sums in another order
TRACE_STEPS = 20  # the loss trace of the key: the first steps of pretraining


def pretrain_key(cfg: Config) -> dict:
    """What shapes the start, as behaviour rather than source (a comment or a refactor that
    computes the same keeps the key): the settings, the model's shape, the teacher's first three
    batches (exact: pure Python), the initial weights' sum of squares and the loss of the first
    TRACE_STEPS steps (both compared with a tolerance, keys_match: another machine rounds
    differently). The risk accepted: a change that alters only later steps of pretraining (its
    learning-rate schedule past the warm-up's first steps, say) is not seen by the key."""
    rng, cpu = random.Random(cfg.pretrain_seed), torch.device("cpu")
    batches = [t for _ in range(3) for t in teacher_batch(cfg, cfg.pretrain_batch, rng, cpu)]
    torch.manual_seed(cfg.pretrain_seed)
    init = sum(float((p.detach().double() ** 2).sum()) for p in GPT(model_config(cfg)).parameters())
    losses = []
    pretrain(cfg, cpu, log=lambda *a: None, losses=losses, steps=min(TRACE_STEPS,
                                                                     cfg.pretrain_steps))
    return {"settings": settings(cfg), "model": dataclasses.asdict(model_config(cfg)),
            "teacher_sha256": hashlib.sha256(b"".join(t.numpy().tobytes() for t in batches))
            .hexdigest(), "init_sum_sq": init, "loss_trace": losses}


def keys_match(saved, key: dict) -> bool:
    """The exact parts equal, the measured ones within rounding (1e-6 relative, 1e-4 per loss)."""
    exact = ("settings", "model", "teacher_sha256")
    return (isinstance(saved, dict) and all(saved.get(k) == key[k] for k in exact)
            and abs(saved.get("init_sum_sq", 0) - key["init_sum_sq"]) <= 1e-6 * key["init_sum_sq"]
            and len(saved.get("loss_trace", [])) == len(key["loss_trace"])
            and all(abs(a - b) <= 1e-4 for a, b in zip(saved["loss_trace"], key["loss_trace"])))


def load_start(cfg: Config, device, log=print) -> tuple[GPT, Path, float]:
    """The start policy: the shipped assets/start.pt for the default pretraining settings (unless
    --pretrain), else <ckpt_dir or out_dir>/pretrained-<hash>.pt, pretrained now if absent. Returns
    (model, path, seconds spent pretraining). RuntimeError, one line naming the file and what to
    do, for a corrupt file or one whose key does not match what this code computes."""
    key = pretrain_key(cfg)
    if not cfg.pretrain and key["settings"] == settings(Config()):
        if not SHIPPED.exists():
            raise RuntimeError(f"{SHIPPED} is missing; rebuild it with: {REBUILD}")
        model = load_checkpoint(SHIPPED, model_config(cfg), key, device, keys_match,
                                f"rebuild it with: {REBUILD}")
        log(f"start: assets/{SHIPPED.name}, shipped with the code (made by "
            f"`{REBUILD}`; --pretrain makes a fresh one)")
        return model, SHIPPED, 0.0
    exact = {k: key[k] for k in ("settings", "model", "teacher_sha256")}
    digest = hashlib.sha256(json.dumps(exact, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(cfg.ckpt_dir or cfg.out_dir) / f"pretrained-{digest}.pt"
    if path.exists():
        log(f"start: {path} (cached)")
        return load_checkpoint(path, model_config(cfg), key, device, keys_match,
                               "delete it to pretrain anew"), path, 0.0
    t0 = time.time()
    model = pretrain(cfg, device, log)
    save_checkpoint(path, model, key)
    log(f"start: pretrained and cached in {path}")
    return model, path, time.time() - t0


def main(argv=None) -> int:
    """python pretrain.py --rebuild: pretrain the default start on REBUILD_THREADS threads and write
    it over assets/start.pt with its key. The only command that writes the shipped file."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rebuild", action="store_true", help=f"rewrite {SHIPPED.name} (other "
                        "starts: python nano_aspo.py --pretrain, or other pretraining flags)")
    if not parser.parse_args(argv).rebuild:
        parser.print_usage(sys.stderr)
        return 2
    torch.set_num_threads(REBUILD_THREADS)
    cfg = Config()
    print(f"warning: a rebuild on another machine or thread count than the shipped file's differs "
          f"from it bitwise; README's start numbers are those of the committed {SHIPPED.name}")
    t0 = time.time()
    model = pretrain(cfg, torch.device("cpu"))
    save_checkpoint(SHIPPED, model, pretrain_key(cfg))
    print(f"wrote {SHIPPED} in {time.time() - t0:.0f}s on {REBUILD_THREADS} thread(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
