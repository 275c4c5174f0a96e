"""ASPO (Wang et al., arXiv 2510.06062) as a verl policy loss. One self-contained file: copy it into your
verl fork (or put this folder on PYTHONPATH) and select it with

    actor_rollout_ref.actor.policy_loss.loss_mode=aspo
    actor_rollout_ref.model.external_lib=verl_aspo     # verl's workers import this module, which registers "aspo"

Per-token gradient weights w(r, sign A), r = pi_theta / pi_old (nano-aspo's ASPO.md §5):
    A > 0 (flipped):   1/r for 1/c <= r <= 1+eps_high;  c below 1/c (soft dual-clip);  0 above 1+eps_high
    A < 0 (PPO-clip):  r for 1-eps_low <= r <= c;       c above c (soft dual-clip);    0 below 1-eps_low
with eps_low, eps_high, c read from verl's actor config (clip_ratio_low, clip_ratio_high, clip_ratio_c).
Check it (and any edit of it) with nano-aspo's checker, which needs no verl:

    python integrations/check_loss.py integrations/verl_aspo.py:compute_policy_loss_aspo --reference aspo

verl is imported only when present: without it the function is plain torch and aggregates by token-mean.
verl changed what a policy loss returns in 0.6.1 (from a 4-tuple to (loss, metrics)); this file returns
whichever the installed verl unpacks, and refuses a verl outside 0.5 to 0.9 in one line. verl 0.9.x also
imports it from a "verl.plugins" entry point (aspo = "verl_aspo") of an installed package.

The ratio's anchor (ASPO.md §12). loss_mode=aspo anchors r on verl's old_log_prob. By default verl
recomputes it with the actor before the update (the decoupled anchor when rollout correction is
on): the rollout's staleness never reaches r. With algorithm.rollout_correction.bypass_mode=True,
verl 0.9.1's default (v1) trainer copies the rollout's log-probs into old_log_prob and keeps
loss_mode, so aspo sees r = pi_theta / pi_rollout: the sampler anchor, for an asynchronous v1
trainer_mode. Without bypass, loss_mode=aspo_sampler anchors r on the rollout too, rebuilt from
verl 0.9's decoupled token-level weights (settings in SAMPLER_SETTINGS); it refuses a batch whose
weights verl truncated or masked. check_config(config), or `python verl_aspo.py OVERRIDES...`,
names the trainer a config runs, and refuses or warns, naming the setting, where verl would
replace ASPO, leave it r = 1 or hand it no anchor (integrations/README.md).
"""
import argparse
import re
import sys
import warnings

import torch

try:
    import verl
except ImportError:
    verl = None

# the releases this file was run inside (tests/test_verl_real.py pins the newest). The policy-loss registry and
# signature it relies on exist from 0.5; a later minor release may change either, so it is refused, not guessed at.
SUPPORTED_MINORS = ((0, 5), (0, 9))
TESTED = "0.5.0, 0.6.0, 0.6.1, 0.7.0, 0.7.1, 0.8.0, 0.9.0, 0.9.1"


def version_tuple(version: str) -> tuple:
    return tuple(int(x) for x in re.findall(r"\d+", version)[:3])


def check_version(version: str) -> None:
    """ImportError, one line, naming the installed and the supported versions, before anything of verl is used."""
    if not SUPPORTED_MINORS[0] <= version_tuple(version)[:2] <= SUPPORTED_MINORS[1]:
        raise ImportError(f"verl_aspo supports verl 0.5 to 0.9 (run inside {TESTED}); installed: verl {version}")


if verl is not None:
    try:
        check_version(verl.__version__)
    except ImportError as error:
        # verl 0.9.x imports a "verl.plugins" entry point inside `import verl` and logs its failure
        # only at debug level: without this line the user sees "Unsupported loss mode: aspo" later
        print(error, file=sys.stderr, flush=True)
        raise
    from verl.trainer.ppo.core_algos import agg_loss, register_policy_loss

# verl < 0.6.1 unpacks (pg_loss, pg_clipfrac, ppo_kl, pg_clipfrac_lower); 0.6.1 and later (pg_loss, metrics dict)
RETURNS_TUPLE_OF_4 = verl is not None and version_tuple(verl.__version__) < (0, 6, 1)


def _masked_mean(x, mask):
    return (x * mask).sum() / mask.sum().clamp(min=1)


def compute_policy_loss_aspo(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode="token-mean",
                             config=None, rollout_is_weights=None):
    """verl's policy-loss signature: (bs, response_length) tensors, advantages per token, verl's actor config."""
    if config is None:
        raise ValueError("ASPO reads its clip settings from verl's actor config; none was passed")
    eps_low = config.clip_ratio_low if config.clip_ratio_low is not None else config.clip_ratio
    eps_high = config.clip_ratio_high if config.clip_ratio_high is not None else config.clip_ratio
    c = config.get("clip_ratio_c", 3.0)
    log_ratio = torch.clamp(log_prob - old_log_prob, min=-20.0, max=20.0)  # as verl and the ASPO reference
    ratio = torch.exp(log_ratio)

    # soft dual-clip (both signs): -A c logp has gradient weight exactly c, instead of 0 (hard clip) or 1/r -> inf
    soft = -advantages * c * log_prob
    # A > 0: p = min(r, 1+eps_high); -A (p / sg(p)) / sg(p) has value -A/p and gradient weight 1/r (0 where p is
    # the constant 1+eps_high). sg = detach.
    p = torch.clamp(ratio, max=1 + eps_high)
    positive = torch.where(ratio < 1 / c, soft, -advantages * (p / p.detach()) / p.detach())
    # A < 0: PPO-clip (weight r inside, 0 below 1-eps_low), then the soft dual-clip above c
    ppo = torch.maximum(-advantages * ratio, -advantages * torch.clamp(ratio, 1 - eps_low, 1 + eps_high))
    negative = torch.where(ratio > c, soft, ppo)
    pg_losses = torch.where(advantages > 0, positive, negative)

    if rollout_is_weights is not None:  # verl's rollout correction, applied as in its vanilla loss
        pg_losses = pg_losses * rollout_is_weights
    if verl is not None:
        pg_loss = agg_loss(loss_mat=pg_losses, loss_mask=response_mask, loss_agg_mode=loss_agg_mode,
                           **(config.get("global_batch_info", None) or {}))
    elif loss_agg_mode == "token-mean":
        pg_loss = _masked_mean(pg_losses, response_mask)
    else:
        raise ValueError(f"without verl only loss_agg_mode='token-mean' is available (got {loss_agg_mode!r})")

    with torch.no_grad():
        pos = (advantages > 0).float()
        # verl's names: pg_clipfrac = tokens the hard clip cuts (weight 0), pg_clipfrac_lower = tokens the
        # dual-clip bounds, here the soft one of either sign (weight c)
        pg_clipfrac = _masked_mean(torch.where(advantages > 0, ratio > 1 + eps_high, ratio < 1 - eps_low).float()
                                   * (advantages != 0), response_mask)
        pg_clipfrac_lower = _masked_mean(pos * (ratio < 1 / c) + (advantages < 0) * (ratio > c), response_mask)
        ppo_kl = _masked_mean(-log_ratio, response_mask)
    if RETURNS_TUPLE_OF_4:
        return pg_loss, pg_clipfrac, ppo_kl, pg_clipfrac_lower
    return pg_loss, {"actor/pg_clipfrac": pg_clipfrac.item(), "actor/ppo_kl": ppo_kl.item(),
                     "actor/pg_clipfrac_lower": pg_clipfrac_lower.item()}




# ---- the sampler anchor (ASPO.md §12): r = pi_theta / pi_rollout inside verl's decoupled mode ----
SAMPLER_SINCE = (0, 9)  # verl's RolloutCorrectionConfig as read in, and tested inside, 0.9.1
# verl caps its log-weights at +-20 (rollout_corr_helper.SAFETY_BOUND), so no weight exceeds
# exp(20) = 4.9e8 and a threshold of 1e9 truncates none: each weight is exactly pi_prox / pi_rollout
NEVER_BINDS = 1e9
RC = "algorithm.rollout_correction."
ACTOR = "actor_rollout_ref.actor."
SAMPLER_SETTINGS = {RC + "bypass_mode": False, RC + "rollout_is": "token",
                    RC + "rollout_is_threshold": "1e9", RC + "rollout_is_batch_normalize": False,
                    "actor_rollout_ref.rollout.calculate_log_probs": True}


def sampler_version_problem(version: str):
    """One line naming the installed verl where aspo_sampler cannot run there, else None."""
    if version_tuple(version)[:2] < SAMPLER_SINCE:
        return (f"loss_mode=aspo_sampler needs verl 0.9 (its decoupled rollout correction, tested "
                f"inside 0.9.1); installed: verl {version}")
    return None


def weights_problem(weights, response_mask, old_log_prob):
    """One line where the weights cannot be pi_prox / pi_rollout as aspo_sampler rebuilds it, else
    None. verl's TIS sets every weight above rollout_is_threshold to the threshold, so it shows as
    several valid tokens sharing the largest weight exactly; IcePop ("lower_upper") sets a weight
    outside its interval to 0. Exempt: a largest weight of exactly 1 (pi_prox = pi_rollout to the
    bit, as matched engines give), and ties whose tokens share their old log-prob too (the same
    token after the same prefix, as a group's completions often are), since a cap ties tokens of
    different contexts."""
    valid = response_mask.bool()
    zero = int((valid & (weights == 0)).sum())
    if zero:
        return (f"loss_mode=aspo_sampler: rollout_is_weights are 0 on {zero} valid tokens, the "
                f"mark of IcePop masking ({RC}rollout_is_threshold='lower_upper'): their "
                f"pi_rollout cannot be rebuilt; set {RC}rollout_is_threshold=1e9")
    top = weights[valid].max() if valid.any() else weights.new_tensor(1.0)
    at_top = valid & (weights == top)
    if top != 1 and old_log_prob[at_top].unique().numel() > 1:
        return (f"loss_mode=aspo_sampler: {int(at_top.sum())} valid tokens share the largest "
                f"rollout_is_weight, {top.item():.6g}, the mark of truncation at "
                f"{RC}rollout_is_threshold: r there would be min(r, cap x pi_theta / pi_prox), "
                f"not pi_theta / pi_rollout; set {RC}rollout_is_threshold=1e9 (never binds)")
    return None


def compute_policy_loss_aspo_sampler(old_log_prob, log_prob, advantages, response_mask,
                                     loss_agg_mode="token-mean", config=None,
                                     rollout_is_weights=None):
    """ASPO with r = pi_theta / pi_rollout. In decoupled mode verl passes old_log_prob = log pi_prox
    (recomputed before the update) and rollout_is_weights = pi_prox / pi_rollout per token (exact
    under SAMPLER_SETTINGS), so log pi_rollout = old_log_prob - log w: ASPO runs on that anchor, and
    the weights act once, inside r (not multiplied in a second time)."""
    problem = verl is not None and sampler_version_problem(verl.__version__)
    if problem:
        raise ValueError(problem)
    if rollout_is_weights is None:
        raise ValueError("loss_mode=aspo_sampler got no rollout_is_weights: set "
                         + ", ".join(f"{k}={v}" for k, v in SAMPLER_SETTINGS.items()))
    problem = weights_problem(rollout_is_weights, response_mask, old_log_prob)
    if problem:
        raise ValueError(problem)
    # padding carries weight 0 (log 0 = -inf); it has no gradient, so any finite anchor does there
    weights = torch.where(response_mask.bool(), rollout_is_weights,
                          torch.ones_like(rollout_is_weights))
    return compute_policy_loss_aspo(old_log_prob - weights.log(), log_prob, advantages,
                                    response_mask, loss_agg_mode, config)


if verl is not None:
    register_policy_loss("aspo")(compute_policy_loss_aspo)
    register_policy_loss("aspo_sampler")(compute_policy_loss_aspo_sampler)


# ---- configuration-time check: the loss cannot warn from inside a loss verl never calls ----
def _get(config, key, default=None):
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException
    try:
        value = OmegaConf.select(config, key)
    except OmegaConfBaseException as error:  # such as an interpolation that names no key
        raise ValueError(f"verl_aspo: cannot read {key} from the config: "
                         f"{one_line(error)}") from None
    return default if value is None else value


def one_line(error) -> str:
    """A parser's error message (YAML's and OmegaConf's run over several lines) on one line."""
    return "; ".join(line.strip() for line in str(error).splitlines() if line.strip()) or \
        type(error).__name__


def threshold_binds(threshold) -> bool:
    """True where verl would truncate or zero some weights: IcePop's "lower_upper" string, or a cap
    below NEVER_BINDS."""
    return isinstance(threshold, str) and "_" in threshold or float(threshold) < NEVER_BINDS


def sampler_errors(config, version: str) -> list:
    """The settings that keep aspo_sampler from seeing r = pi_theta / pi_rollout, one line each."""
    found = [sampler_version_problem(version)]
    if not _get(config, "actor_rollout_ref.rollout.calculate_log_probs", False):
        found.append("actor_rollout_ref.rollout.calculate_log_probs=False: without rollout "
                     "log-probs verl computes no rollout_is_weights; aspo_sampler has no anchor")
    if _get(config, RC + "rollout_is") != "token":
        found.append(f"{RC}rollout_is={_get(config, RC + 'rollout_is')}: aspo_sampler rebuilds "
                     "each token's pi_rollout from its own weight; set it to token")
    threshold = _get(config, RC + "rollout_is_threshold", 2.0)
    if threshold_binds(threshold):
        found.append(f"{RC}rollout_is_threshold={threshold}: truncates the weights, so r is not "
                     f"pi_theta / pi_rollout there; set it to 1e9 (never binds)")
    if _get(config, RC + "rollout_is_batch_normalize", False):
        found.append(f"{RC}rollout_is_batch_normalize=True: rescales the weights; set it to False")
    return [line for line in found if line]


def one_update_per_batch(config) -> bool:
    """ppo_epochs 1 and one mini-batch (both counted in prompts): the update's ratio is r = 1."""
    epochs = _get(config, ACTOR + "ppo_epochs", 1)
    mini_batch = _get(config, ACTOR + "ppo_mini_batch_size", 0)
    return epochs == 1 and mini_batch >= _get(config, "data.train_batch_size", 1)


# where verl 0.9.1 sets old_log_probs under bypass mode, by trainer (read in its wheel; the v1
# trainer's piece runs in tests/test_verl_real.py)
TRAINERS = {
    "v1": "verl's default v1 trainer (trainer.use_v1=True; trainer/ppo/v1/trainer_base.py, "
          "PPOTrainer._compute_old_log_prob)",
    "legacy": "verl's deprecated legacy trainer (trainer.use_v1=False; trainer/ppo/ray_trainer.py, "
              "RayPPOTrainer.fit)",
    "separation": "verl's separation trainer of the fully-async and one-step-off recipes "
                  "(experimental/separation/ray_trainer.py, "
                  "SeparateRayPPOTrainer._fit_compute_log_prob)",
}


def trainer_in_use(config) -> str:
    """The TRAINERS key of the verl trainer that runs this config: "separation" for a recipe's
    config (its own top-level rollout or async_training section; its entry point ignores
    trainer.use_v1), else "v1" or "legacy" as trainer.use_v1 picks in trainer/main_ppo.py."""
    if "rollout" in config or "async_training" in config:
        return "separation"
    return "v1" if _get(config, "trainer.use_v1", True) else "legacy"


def bypass_findings(config, loss_mode: str) -> list:
    """[(level, line)] for bypass mode, by the trainer that runs the config."""
    trainer = trainer_in_use(config)
    found = []
    if not _get(config, "actor_rollout_ref.rollout.calculate_log_probs", False):
        found.append(("error", "actor_rollout_ref.rollout.calculate_log_probs=False: bypass mode "
                      "copies the rollout's log-probs into old_log_probs, and the rollout computes "
                      "none; set it True"))
    if loss_mode == "aspo_sampler":
        found.append(("error", f"{RC}bypass_mode=True: no verl trainer computes rollout_is_weights "
                      "in bypass mode (v1: PPOTrainer._compute_advantage), so aspo_sampler has no "
                      "anchor; use loss_mode=aspo, whose old_log_prob is then the rollout's"))
        return found
    if trainer != "v1":
        found.append(("warning", f"{RC}bypass_mode=True in {TRAINERS[trainer]}: it calls "
                      "rollout_corr_helper.apply_bypass_mode, which sets loss_mode=bypass_mode "
                      f"(verl's PPO-clip or REINFORCE, {RC}loss_type) in the driver's copy of the "
                      "actor config; whether the workers' copy sees it is open (verl issue 4912, "
                      "PR 4930), so ASPO may not run (not run here); bypass in the v1 trainer "
                      "(trainer.use_v1=True, an asynchronous trainer.v1.trainer_mode) keeps "
                      "loss_mode=aspo"))
        return found
    mode = _get(config, "trainer.v1.trainer_mode", "sync")
    found.append(("note", f"{RC}bypass_mode=True in {TRAINERS['v1']}, trainer.v1.trainer_mode="
                  f"{mode}: old_log_probs = rollout_log_probs and loss_mode=aspo is kept, so "
                  "r = pi_theta / pi_rollout (the sampler anchor)"))
    for key in ("rollout_is", "rollout_rs"):
        if _get(config, RC + key) is not None:
            found.append(("warning", f"{RC}{key}={_get(config, RC + key)}: ignored in bypass mode "
                          "by the v1 trainer (PPOTrainer._compute_advantage corrects only with "
                          "bypass off)"))
    if mode == "sync" and one_update_per_batch(config):
        found.append(("warning", f"{ACTOR}ppo_epochs=1 with {ACTOR}ppo_mini_batch_size >= "
                      "data.train_batch_size in trainer.v1.trainer_mode=sync: one update per "
                      "batch sampled by the same weights, so r = pi_theta / pi_rollout is 1 but "
                      "for the engines' mismatch, and ASPO differs from GRPO only there; use "
                      "colocate_async or separate_async, or more mini-batches or epochs"))
    return found


def config_findings(config, version: str) -> list:
    """[(level, line)] for a verl trainer config (an OmegaConf DictConfig): "error" where ASPO would
    not run or not see the ratio its loss_mode promises, "warning" where it may not run or equals
    GRPO, "note" for the anchor bypass mode gives it."""
    loss_mode = _get(config, ACTOR + "policy_loss.loss_mode", "vanilla")
    if loss_mode not in ("aspo", "aspo_sampler"):
        return []
    if _get(config, RC + "bypass_mode", False):
        found = bypass_findings(config, loss_mode)
    elif loss_mode == "aspo_sampler":
        found = [("error", line) for line in sampler_errors(config, version)]
    elif one_update_per_batch(config):
        found = [("warning", f"{ACTOR}ppo_epochs=1 with {ACTOR}ppo_mini_batch_size >= "
                  "data.train_batch_size: one update per batch on recomputed old log-probs, "
                  "so r = 1 on every token and ASPO equals GRPO (ASPO.md §12); use "
                  "loss_mode=aspo_sampler, bypass mode in an asynchronous trainer.v1.trainer_mode, "
                  "or more mini-batches or epochs")]
    else:
        found = []
    if _get(config, ACTOR + "use_rollout_log_probs", False):
        found.append(("warning", f"{ACTOR}use_rollout_log_probs=True: read by no loss code in "
                      f"verl {version}; it does not anchor the ratio on the rollout"))
    return found


def check_config(config) -> None:
    """Call with verl's trainer config before training: a UserWarning per warning, and a ValueError
    with one line per error, each naming its setting."""
    from omegaconf import DictConfig, OmegaConf
    if verl is None:
        raise ImportError("verl_aspo.check_config reads a verl config: install verl")
    if isinstance(config, dict):
        config = OmegaConf.create(config)
    if not isinstance(config, DictConfig):
        raise TypeError("verl_aspo.check_config takes verl's trainer config (an OmegaConf "
                        f"DictConfig or a dict), got {type(config).__name__}")
    found = config_findings(config, verl.__version__)
    for level, line in found:
        if level == "warning":
            warnings.warn(line, stacklevel=2)
    errors = [line for level, line in found if level == "error"]
    if errors:
        raise ValueError("\n".join(errors))


def load_config(overrides: list, recipe=None):
    """verl's default trainer config (its generated ppo_trainer.yaml), then a recipe yaml's own keys
    (such as fully_async_ppo_trainer.yaml, its hydra defaults dropped), then Hydra-style KEY=VALUE
    overrides (a leading + or ++ accepted). ValueError, one line, for what it cannot read."""
    from pathlib import Path

    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException
    from yaml import YAMLError
    for override in overrides:
        key = override.lstrip("+").split("=", 1)[0]
        if "=" not in override or not key or key.startswith("~"):
            raise ValueError(f"verl_aspo: cannot read the override {override!r}: this check takes "
                             "KEY=VALUE (a leading + or ++ accepted), not Hydra's other forms")
    config_dir = Path(verl.__file__).parent / "trainer" / "config"
    config = OmegaConf.load(config_dir / "_generated_ppo_trainer.yaml")
    try:
        if recipe:
            own = {k: v for k, v in OmegaConf.load(recipe).items()
                   if k not in ("defaults", "hydra")}
            config = OmegaConf.merge(config, own)
        return OmegaConf.merge(config, OmegaConf.from_dotlist([o.lstrip("+") for o in overrides]))
    except (OSError, YAMLError, OmegaConfBaseException, AttributeError) as error:
        what = f"--config {recipe}" if recipe else "the overrides"
        raise ValueError(f"verl_aspo: cannot read {what}: {one_line(error)}") from None


def main(argv) -> int:
    """check_config's findings on the config a verl run with these overrides gets, one line each;
    exit 1 on an error, 2 without verl or on a config it cannot read (one line)."""
    parser = argparse.ArgumentParser(description="Check a verl config for ASPO (verl_aspo.py)")
    parser.add_argument("--config", help="a recipe's yaml, merged over verl's default config")
    parser.add_argument("overrides", nargs="*", help="KEY=VALUE, as given to verl's trainer")
    args = parser.parse_args(argv)
    if verl is None:
        print("verl_aspo: checking a config needs verl installed", file=sys.stderr)
        return 2
    try:
        found = config_findings(load_config(args.overrides, args.config), verl.__version__)
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2
    for level, line in found:
        print(f"{level}: {line}")
    if all(level == "note" for level, _ in found):
        print("ok: nothing found that replaces ASPO or leaves it r = 1")
    return 1 if any(level == "error" for level, _ in found) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
