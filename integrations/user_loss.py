"""Your own policy loss, written as a verl policy loss, trained and checked by nano-aspo.

    python nano_aspo.py --methods grpo,my_loss.py:my_fn     # trains it beside the built-in methods
    python integrations/check_loss.py my_loss.py:my_fn      # checks its per-token weights

`user_loss("FILE.py:FUNCTION")` imports the function from its file (nothing to install) and returns a loss
with nano_aspo.policy_loss's signature: policy_loss(spec, ...) calls it, so a loss written for a verl fork
trains here beside the built-in methods and is weighed by the same per-token weight view (ASPO.md §3): its
gradient, like theirs, is -(1/N) sum_t A_t w_t grad logp_t for some w_t(r_t, sign A_t). It is called the
way verl's actor calls a policy loss: keyword arguments, per-token advantages, verl's config names.
"""
import functools
import hashlib
import importlib.util
import inspect
import sys
from pathlib import Path

import torch

VERL_TENSORS = ("old_log_prob", "log_prob", "advantages", "response_mask")  # verl passes these by keyword
VERL_OPTIONS = ("loss_agg_mode", "config", "rollout_is_weights")  # and these (the last since verl 0.6.0)


class VerlConfig(dict):
    """The clip settings under verl's actor-config names, readable as verl's own losses read them:
    config.clip_ratio_low, config["clip_ratio_low"] or config.get("clip_ratio_c", 3.0)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def one_line(e: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    first = str(e).strip().splitlines()
    return f"{type(e).__name__}: {first[0]}" if first else type(e).__name__


def verl_params(fn) -> list[str]:
    """The parameters call_verl_loss passes to fn, by name: verl's four tensors, loss_agg_mode, config and
    rollout_is_weights where fn takes them, and an all-true mask for any other required parameter named *mask.
    ValueError naming a parameter that verl's policy-loss call would leave unfilled."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        raise ValueError("its signature cannot be read") from None
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    for name in VERL_TENSORS:
        if name not in params and not takes_any:
            raise ValueError(f"it does not take {name}, one of the keyword arguments verl passes "
                             f"({', '.join(VERL_TENSORS + VERL_OPTIONS)})")
    names = []
    for name, p in params.items():
        required = p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        if required and p.kind is p.POSITIONAL_ONLY:
            raise ValueError(f"its parameter {name!r} is positional-only; verl passes everything by keyword")
        if name in VERL_TENSORS or name in VERL_OPTIONS or (required and name.endswith("mask")):
            names.append(name)
        elif required:
            raise ValueError(f"it requires a parameter {name!r} that verl's policy-loss call does not pass")
    return names + [n for n in VERL_TENSORS if n not in names]  # the rest go through **kwargs


def load_function(spec: str):
    """'path/to/file.py:function' -> that function, imported from the file (nothing to install). ValueError
    (one line) for a missing file or function, an import that raises, or something not callable."""
    path, _, name = spec.rpartition(":")
    if not path.endswith(".py") or not name:
        raise ValueError("expected FILE.py:FUNCTION")
    if not Path(path).is_file():
        raise ValueError(f"no such file {path}")
    module_name = "nano_aspo_user_" + hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:12]
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module  # some code looks its module up while it is imported (dataclasses)
    try:
        module_spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[module_name]
        raise ValueError(f"importing {path} raised {one_line(e)}") from None
    fn = getattr(module, name, None)
    if fn is None:
        raise ValueError(f"{path} has no function {name!r}")
    if not callable(fn):
        raise ValueError(f"{name!r} in {path} is not callable")
    return fn


def load_verl_loss(spec: str):
    """load_function, and a ValueError (one line) where its parameters are not those verl fills."""
    fn = load_function(spec)
    verl_params(fn)
    return fn


def verl_config(mask, eps_low, eps_high, clip_c):
    """The actor config a verl policy loss gets: our clip settings, and every other field verl 0.9.1's own policy
    losses read, at verl's defaults (tests/test_verl_real.py compares them with its ActorConfig), so that its
    built-in losses run here as they are. global_batch_info is what verl's ppo_loss puts there for one process and
    one micro-batch; verl's agg_loss then normalizes by this batch (token-mean: by its valid tokens). Where verl
    is loaded (the loss's file imported it), the config is verl's own ActorConfig, which some of its losses assert."""
    clip = {"clip_ratio": eps_low, "clip_ratio_low": eps_low, "clip_ratio_high": eps_high, "clip_ratio_c": clip_c}
    batch = {"dp_size": 1, "batch_num_tokens": int(mask.sum()), "global_batch_size": mask.shape[0],
             "loss_scale_factor": None}
    actor_config = getattr(sys.modules.get("verl.workers.config"), "ActorConfig", None)
    if actor_config is not None:
        return actor_config(strategy="fsdp", rollout_n=1, ppo_micro_batch_size_per_gpu=1, **clip,
                            global_batch_info=batch)
    return VerlConfig(**clip, loss_scale_factor=None, tau_pos=1.0, tau_neg=1.05, global_batch_info=batch,
                      policy_loss=VerlConfig(loss_mode="vanilla", clip_cov_ratio=0.0002, clip_cov_lb=1.0,
                                             clip_cov_ub=5.0, kl_cov_ratio=0.0002, ppo_kl_coef=0.1, dro_beta=None))


NO_WEIGHTS = ("it does not take rollout_is_weights, which --ratio-anchor decoupled passes at a "
              "--rollout-lag above 0 (the behaviour weights, ASPO.md §12)")


def takes_weights(fn) -> bool:
    """Whether fn can be handed rollout_is_weights: by that name or through **kwargs."""
    return any(p.name == "rollout_is_weights" or p.kind is p.VAR_KEYWORD
               for p in inspect.signature(fn).parameters.values())


def call_verl_loss(fn, logp, old_logp, advantages, mask, eps_low=0.2, eps_high=0.28, clip_c=3.0,
                   rollout_is_weights=None, **_):
    """fn called as verl's actor calls a policy loss, returning its scalar loss. fn gets per-token
    advantages (B, T) (constant along a row, §1), the response mask, loss_agg_mode="token-mean" (§3),
    config (verl_config: the clip settings and verl's other fields) and rollout_is_weights=None (no
    rollout correction; under --ratio-anchor decoupled at a lag above 0 the behaviour weights,
    ASPO.md §12); its loss is its return value or the first element of it (verl returns
    (loss, metrics) or, before 0.6.1, a 4-tuple). ValueError, one line, where fn raises, returns no
    scalar, or returns a loss without a gradient. Keywords fn has no use for (entropy, ...) are dropped."""
    A = advantages[:, None].expand_as(logp)
    given = {"old_log_prob": old_logp, "log_prob": logp, "advantages": A.contiguous(), "response_mask": mask,
             "loss_agg_mode": "token-mean", "rollout_is_weights": rollout_is_weights,
             "config": verl_config(mask, eps_low, eps_high, clip_c)}
    names = verl_params(fn)
    if rollout_is_weights is not None and "rollout_is_weights" not in names:
        if not takes_weights(fn):
            raise ValueError(NO_WEIGHTS)
        names.append("rollout_is_weights")
    all_true = torch.ones_like(mask, dtype=torch.bool)
    try:
        out = fn(**{name: given.get(name, all_true) for name in names})
    except Exception as e:
        raise ValueError(f"it raised {one_line(e)}") from e
    loss = out[0] if isinstance(out, (tuple, list)) and out else out
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        what = f"a tensor of shape {tuple(loss.shape)}" if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise ValueError(f"it returned {what}, not a scalar loss")
    if logp.requires_grad and not loss.requires_grad:
        raise ValueError("its loss has no gradient with respect to log_prob")
    return loss.reshape(())


def try_loss(loss, weights: bool = False):
    """loss (policy_loss's arguments) called once on a small batch: several rows (a loss per row
    instead of one scalar shows only there), both signs of A, a padding token, and where `weights`
    behaviour weights (rollout_is_weights) too. ValueError (one line) where it fails."""
    logp = torch.zeros(3, 2, requires_grad=True)
    mask = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 0.0]])
    w = torch.tensor([[1.0, 2.0], [0.5, 1.0], [1.0, 1.0]]) if weights else None
    loss(logp, logp.detach(), torch.tensor([1.0, -1.0, 0.5]), mask, rollout_is_weights=w)


@functools.lru_cache(maxsize=None)  # loaded and tried once per run (failures are not cached)
def user_loss(spec: str):
    """The loss of 'FILE.py:FUNCTION' as a function (logp, old_logp, advantages, mask, eps_low, eps_high,
    clip_c) -> scalar loss, tried once (try_loss) so that a broken loss stops before pretraining.
    ValueError (one line) otherwise."""
    loss = functools.partial(call_verl_loss, load_verl_loss(spec))
    try_loss(loss)
    return loss


def register_user_loss(spec: str, registry: dict, weights: bool = False):
    """Load and try the loss of 'FILE.py:FUNCTION' (user_loss) and enter it in `registry`
    (nano_aspo.USER_LOSSES), so that nano_aspo.policy_loss(spec, ...) calls it. weights: the run
    will hand it behaviour weights (--ratio-anchor decoupled at a lag above 0, ASPO.md §12), so it
    must take rollout_is_weights and is tried with them too. ValueError, one line naming the spec,
    where it cannot be used."""
    try:
        loss = user_loss(spec)
        try:  # one that cannot take the behaviour weights is refused here, not at step 1
            try_loss(loss, weights)
        except ValueError as e:
            raise ValueError(e if str(e) == NO_WEIGHTS else f"{e}, handed rollout_is_weights as "
                             "--ratio-anchor decoupled at a lag above 0 does") from None
        registry[spec] = loss
    except ValueError as e:
        raise ValueError(f"{spec}: {e}") from None
