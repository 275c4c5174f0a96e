"""The run's configuration: one dataclass, every field a command-line flag with its help; the
defaults are the demo. Bad values stop with a one-line error naming the flag (validate), before any
work. Also the sizes that follow from it (the model's, the longest completion) and its problems.
"""
import argparse
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from model import GPTConfig
from peers import CISPO_EPS_MAX, ICEPOP_BOUNDS, M2PO_BUDGET
from rewards import CarryProblem, make_problems
from tokenizer import VOCAB_SIZE

def flag(default, help):
    return field(default=default, metadata={"help": help})


@dataclass
class Config:
    # run
    methods: str = flag("grpo,aspo", "comma-separated methods of nano_aspo.policy_loss (listed "
                        "above), or FILE.py:FUNCTION: your own verl-style loss")
    seeds: str = flag("0", "comma-separated RL seeds; each runs every method from the same start")
    out_dir: str = flag("out", "directory for metrics.jsonl, summary.json and the start's cache")
    ckpt_dir: str = flag("", "directory of the cached pretrained start (default: --out-dir)")
    device: str = flag("auto", "auto, cpu, cuda, cuda:N or mps")
    quiet: bool = flag(False, "do not print sample completions at each evaluation")
    # the task (rewards.py): a marker (c: with carries, right everywhere; n: no carries, right
    # only on easy problems) and the sum's digits, least significant first
    digits: int = flag(3, "each operand is uniform in [0, 10**digits)")
    operands: int = flag(2, "numbers per problem")
    train_problems: int = flag(800, "size of the RL prompt pool")
    easy_share: float = flag(0.95, "share of the RL prompt pool without a carry (the shortcut is "
                             "right there; about 17 percent of all 3-digit sums)")
    eval_easy_share: float = flag(0.5, "share of the held-out set without a carry")
    # model (model.py)
    n_layer: int = flag(2, "transformer blocks")
    n_head: int = flag(4, "attention heads")
    n_embd: int = flag(64, "embedding width")
    # pretraining: the supervised stage that makes the start policy (pretrain.py)
    pretrain: bool = flag(False, "pretrain a fresh start into the cache (--ckpt-dir or --out-dir; "
                          "minutes) instead of loading the shipped assets/start.pt; other "
                          "pretraining settings than the defaults always do")
    careful_share: float = flag(0.1, "share of the teacher's answers that use the careful way (c)")
    careful_noise: float = flag(0.2, "share of the teacher's careful answers it corrupts")
    shortcut_noise: float = flag(0.05, "share of the teacher's shortcut (n) answers it corrupts")
    pretrain_steps: int = flag(4000, "supervised steps")
    pretrain_batch: int = flag(64, "sequences per supervised step")
    pretrain_lr: float = flag(4e-3, "peak learning rate (warm-up over 5%% of the steps, cosine)")
    pretrain_seed: int = flag(1234, "seed of pretraining (one start shared by all RL seeds)")
    # RL
    steps: int = flag(100, "RL steps (one rollout batch each)")
    prompts: int = flag(32, "prompts per RL step (P)")
    group: int = flag(8, "completions per prompt (G)")
    temperature: float = flag(1.0, "sampling temperature (also of the old and new log-probs)")
    lr: float = flag(2e-4, "RL learning rate (AdamW)")
    minibatches: int = flag(8, "optimizer steps per epoch over one rollout batch")
    epochs: int = flag(4, "passes over a rollout batch; mu = minibatches * epochs updates")
    adv_std: bool = flag(True, "divide advantages by the group std (§1); --no-adv-std: Dr. GRPO")
    grad_clip: float = flag(1.0, "max global gradient norm")
    eps_low: float = flag(0.2, "lower clip range: r below 1 - eps_low is clipped (§4)")
    eps_high: float = flag(0.28, "upper clip range (clip-higher): r above 1 + eps_high (§4)")
    clip_c: float = flag(3.0, "dual-clip constant c (§4 hard, §5 soft)")
    # the peers' own parameters (peers.py, ASPO.md §13)
    cispo_eps_max: float = flag(CISPO_EPS_MAX, "cispo's truncation of the ratio, min(r, eps_max) "
                                "(TRL's epsilon_high; it recommends 5); >= 1")
    icepop_bounds: str = flag(",".join(f"{b:g}" for b in ICEPOP_BOUNDS), "icepop's interval "
                              "lo,hi: tokens with r outside it get no gradient; lo <= 1 <= hi")
    m2po_budget: float = flag(M2PO_BUDGET, "m2po's second-moment budget: tokens with the "
                              "largest (log r)^2 are dropped until the mean of the rest is below")
    # stale rollouts (asynchronous RL, ASPO.md §12)
    rollout_lag: str = flag("0,8", "comma-separated lags L: the batch of RL step t is sampled by "
                            "the weights after step t-1-L (the start while t <= L+1); 0: on-policy "
                            "(every (method, lag, seed) is one run, paired by seed within a lag)")
    ratio_anchor: str = flag("sampler", "which log-probs anchor the ratio (§12): sampler (r = "
                             "pi_theta / pi_behaviour) or decoupled (u = pi_theta / pi_prox times "
                             "a detached behaviour weight pi_prox / pi_behaviour, truncated)")
    behaviour_cap: float = flag(2.0, "truncation of the decoupled anchor's behaviour weight "
                                "(verl's token-level rollout-correction threshold); >= 1")
    kl_coef: float = flag(0.0, "beta of the k3 KL to the start, for every method (§5: the shipped "
                          "loss uses 0.001); 0 has no KL term")
    # evaluation
    eval_every: int = flag(20, "evaluate on held-out problems every this many RL steps")
    eval_problems: int = flag(500, "held-out problems of the start and final evaluations")
    curve_problems: int = flag(100, "held-out problems in between (the first of the full set)")
    eval_samples: int = flag(16, "samples per held-out problem (n of the pass@k estimator)")
    k: int = flag(8, "k of pass@k (k <= eval_samples)")
    log_every: int = flag(5, "write a metrics line every this many RL steps")
    # many runs at once (batched.py)
    batch_seeds: bool = flag(True, "train all (method, seed) runs as one batched model; "
                             "--no-batch-seeds trains them one after another (the reference)")
    max_members: int = flag(64, "most runs in one batched model; more go in chunks of this many")

    @property
    def method_list(self) -> list[str]:
        return [m.strip() for m in self.methods.split(",")]  # "grpo,,aspo": an empty name, refused

    @property
    def seed_list(self) -> list[int]:
        return [int(s) for s in self.seeds.split(",")]  # "1,,2": int("") fails

    @property
    def lag_list(self) -> list[int]:
        return [int(s) for s in self.rollout_lag.split(",")]  # "1,,2": int("") fails

    @property
    def icepop_bound_pair(self) -> tuple[float, float]:
        lo, hi = (float(b) for b in self.icepop_bounds.split(","))
        return lo, hi

    @property
    def mu(self) -> int:
        return self.minibatches * self.epochs

    def validate(self, known_methods=None):
        """Raise ValueError naming the flag of the first bad value."""
        def need(ok, flag, what):
            if not ok:
                raise ValueError(f"--{flag} {what}")
        methods = self.method_list
        # known_methods None: any name goes (the names are not checked)
        known = [m for m in methods if m] if known_methods is None else known_methods
        need(all(m and (m in known or ".py:" in m) for m in methods), "methods",
             f"must name methods from {','.join(known)} or FILE.py:FUNCTION "
             f"(got {self.methods!r})")
        try:
            seeds = self.seed_list
        except ValueError:
            seeds = None
        need(seeds, "seeds", f"must be comma-separated integers (got {self.seeds!r})")
        try:
            lags = self.lag_list
        except ValueError:
            lags = None
        need(lags and min(lags) >= 0, "rollout-lag", "must be comma-separated integers >= 0 "
             f"(got {self.rollout_lag!r})")
        need(self.ratio_anchor in ("sampler", "decoupled"), "ratio-anchor",
             f"must be sampler or decoupled (got {self.ratio_anchor!r})")
        need(self.behaviour_cap >= 1, "behaviour-cap", "must be >= 1: a cap below 1 would move "
             f"the on-policy numbers (got {self.behaviour_cap})")
        need(self.cispo_eps_max >= 1, "cispo-eps-max", "must be >= 1: a cap below 1 would "
             f"move the on-policy weight (got {self.cispo_eps_max})")
        try:
            lo, hi = self.icepop_bound_pair
        except ValueError:
            lo = hi = math.nan
        need(0 <= lo <= 1 <= hi, "icepop-bounds", "must be lo,hi with 0 <= lo <= 1 <= hi: the "
             f"interval keeps r = 1 (got {self.icepop_bounds!r})")
        need(self.m2po_budget > 0, "m2po-budget", f"must be > 0 (got {self.m2po_budget})")
        for name, items in (("methods", methods), ("seeds", seeds), ("rollout-lag", lags)):
            need(len(set(items)) == len(items), name, f"lists an entry twice (got {items})")
        need(self.device in ("auto", "cpu", "mps", "cuda") or (self.device[:5] == "cuda:" and
             self.device[5:].isdigit()), "device", f"must be auto, cpu, cuda, cuda:N or mps "
             f"(got {self.device!r})")
        need(self.steps >= 0, "steps", f"must be >= 0 (got {self.steps}; 0 evaluates the start)")
        ranges = {"at least 1": (lambda v: v >= 1, "digits n_layer n_head n_embd pretrain_steps "
                                 "pretrain_batch max_members curve_problems prompts minibatches "
                                 "epochs eval_every eval_problems eval_samples log_every "
                                 "train_problems"),
                  "at least 2": (lambda v: v >= 2, "operands group"),  # a group of 1 has no A
                  "> 0": (lambda v: v > 0, "temperature lr pretrain_lr grad_clip"),
                  ">= 0": (lambda v: v >= 0, "kl_coef"),
                  "in [0, 1)": (lambda v: 0 <= v < 1, "shortcut_noise careful_noise"),
                  "in [0, 1]": (lambda v: 0 <= v <= 1, "careful_share easy_share eval_easy_share"),
                  "in (0, 1)": (lambda v: 0 < v < 1, "eps_low eps_high"),
                  "> 1": (lambda v: v > 1, "clip_c")}
        for what, (ok, names) in ranges.items():
            for name in names.split():
                need(ok(getattr(self, name)), name.replace("_", "-"),
                     f"must be {what} (got {getattr(self, name)})")
        need(self.n_embd % self.n_head == 0, "n-embd",
             f"must be divisible by --n-head ({self.n_embd} % {self.n_head} != 0)")
        need(self.prompts <= self.train_problems, "prompts",
             f"must be <= --train-problems (got {self.prompts} > {self.train_problems})")
        need(self.curve_problems <= self.eval_problems, "curve-problems", "must be <= "
             f"--eval-problems (a subset; got {self.curve_problems} > {self.eval_problems})")
        need(2 <= self.k <= self.eval_samples, "k", "must be in [2, --eval-samples]: pass@1 is "
             f"always reported (got {self.k}, --eval-samples {self.eval_samples})")
        need(self.prompts * self.group >= self.minibatches, "minibatches",
             f"must be <= prompts * group = {self.prompts * self.group} (got {self.minibatches})")
        for name in ("out_dir", "ckpt_dir"):  # checked before any work, not after pretraining
            path = Path(getattr(self, name))
            need(not path.is_file(), name.replace("_", "-"), f"{path} is a file, not a directory")


def parse_config(argv=None, methods=None, description="") -> Config:
    """Config from the command line: every field is a flag (--out-dir or --out-dir=...). methods:
    the built-in method names, for --methods' check and the help."""
    listed = f" Methods: {', '.join(methods)}." if methods else ""
    parser = argparse.ArgumentParser(description=description + listed,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for f in dataclasses.fields(Config):
        name, help = "--" + f.name.replace("_", "-"), f.metadata["help"]
        if f.type is bool or f.type == "bool":
            parser.add_argument(name, action=argparse.BooleanOptionalAction, default=f.default,
                                help=help)
        else:
            parser.add_argument(name, type=type(f.default), default=f.default, help=help)
    cfg = Config(**vars(parser.parse_args(argv)))
    cfg.validate(methods)
    return cfg


def pick_device(name: str) -> torch.device:
    """--device as a torch.device; ValueError where that device is not on this machine."""
    available = {"cpu": True, "cuda": torch.cuda.is_available(),
                 "mps": torch.backends.mps.is_available()}
    if name == "auto":
        return torch.device("cuda" if available["cuda"] else "mps" if available["mps"] else "cpu")
    if not available[name.split(":")[0]]:
        raise ValueError(f"--device {name}: {name.split(':')[0].upper()} is not available here")
    return torch.device(name)


def task_problems(cfg: Config, split: str) -> list[CarryProblem]:
    """The RL prompt pool (split "train") or the fixed held-out evaluation set ("test")."""
    kw = dict(digits=cfg.digits, operands=cfg.operands)
    if split == "train":
        return make_problems(cfg.train_problems, cfg.pretrain_seed, "train",
                             easy_share=cfg.easy_share, **kw)
    return make_problems(cfg.eval_problems, 0, "test", easy_share=cfg.eval_easy_share, **kw)


def max_new_tokens(cfg: Config) -> int:
    """Room for the longest answer (marker, digits of the largest sum), the end token, 2 spares."""
    return 1 + len(str(cfg.operands * (10 ** cfg.digits - 1))) + 3


def block_size(cfg: Config) -> int:
    return 1 + cfg.operands * (cfg.digits + 1) + max_new_tokens(cfg)


def model_config(cfg: Config) -> GPTConfig:
    return GPTConfig(vocab_size=VOCAB_SIZE, block_size=block_size(cfg), n_layer=cfg.n_layer,
                     n_head=cfg.n_head, n_embd=cfg.n_embd)
