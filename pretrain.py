"""The start policy: supervised training on an imperfect teacher, and the start it makes.

The teacher answers each problem the careful way (right everywhere) with probability
--careful-share and by the shortcut otherwise, each way corrupted at its own noise rate; the policy
learns its mixture from fresh training-split problems every step (warm-up, cosine decay). Every RL
run starts from this policy; nano_aspo.py loads it (load_or_pretrain).
"""
import dataclasses
import hashlib
import inspect
import json
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from config import Config, model_config
from model import GPT, load_checkpoint, save_checkpoint
from rewards import CarryProblem, Problem, corrupt, random_problem, split_of
from tokenizer import EOS, PAD, VOCAB, encode, prompt_ids

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


def pretrain(cfg: Config, device, log=print) -> GPT:
    """Supervised training on the teacher's answers, fresh problems every step, warm-up then cosine
    decay: the start policy mixes the teacher's two ways, the careful one rare (§10)."""
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
    for step in range(cfg.pretrain_steps):
        batch = teacher_batch(cfg, cfg.pretrain_batch, rng, device)
        loss = supervised_step(model, optimizer, *batch)
        sched.step()
        if step % 200 == 0 or step == cfg.pretrain_steps - 1:
            log(f"  pretrain step {step:4d}  loss {loss.item():.3f}")
    return model


PRETRAIN_FIELDS = ("digits", "operands", "n_layer", "n_head", "n_embd", "careful_share",
                   "careful_noise", "shortcut_noise", "pretrain_steps", "pretrain_batch",
                   "pretrain_lr", "pretrain_seed")


def pretrain_key(cfg: Config) -> dict:
    """Everything that shapes the start: its settings and the code that makes it (so an edit of
    the RL code keeps the cached start, and an edit of the teacher does not)."""
    code = "".join(Path(__file__).with_name(f).read_text() for f in ("model.py", "rewards.py"))
    code += "".join(inspect.getsource(f) for f in (pretrain, supervised_step, teacher_answer,
                                                   teacher_batch, prompt_ids)) + VOCAB
    return {"settings": {f: getattr(cfg, f) for f in PRETRAIN_FIELDS},
            "model": dataclasses.asdict(model_config(cfg)),
            "code_sha256": hashlib.sha256(code.encode()).hexdigest()}


def load_or_pretrain(cfg: Config, device, log=print) -> tuple[GPT, Path, float]:
    """The start, from <ckpt_dir or out_dir>/pretrained-<hash of its key>.pt if it exists, else
    trained now and cached. Returns (model, path, seconds spent training)."""
    key = pretrain_key(cfg)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(cfg.ckpt_dir or cfg.out_dir) / f"pretrained-{digest}.pt"
    if path.exists():
        log(f"loaded pretrained checkpoint {path}")
        return load_checkpoint(path, model_config(cfg), key, device), path, 0.0
    t0 = time.time()
    model = pretrain(cfg, device, log)
    save_checkpoint(path, model, key)
    log(f"saved pretrained checkpoint {path}")
    return model, path, time.time() - t0
