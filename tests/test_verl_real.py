"""integrations/verl_aspo.py and integrations/check_loss.py inside a real verl, the release
integrations/requirements-verl.txt pins: registration and retrieval through verl's own registry and plugin loaders,
the call exactly as that release's loss path makes it (verl.workers.utils.losses.ppo_loss with its FSDPActorConfig
and its aggregation), what it returns, equality with verl's vanilla at r = 1, and check_loss on the plugin and on
verl's own losses. Skipped without verl (the reason shows in the summary); under CI a missing verl fails
(conftest.require)."""
import importlib
import os
import subprocess
import sys

import pytest
import torch

import nano_aspo as na
from conftest import ROOT, require
from integrations import check_loss, user_loss

PINNED = (ROOT / "integrations" / "requirements-verl.txt").read_text().split("verl==")[1].split()[0]
AGG_MODES = ("token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-sum-norm", "seq-mean-token-mean")
CLIP = {"clip_ratio": 0.2, "clip_ratio_low": 0.2, "clip_ratio_high": 0.28, "clip_ratio_c": 3.0}


@pytest.fixture(scope="module")
def verl():
    # imported by the tests that need it, not at collection: importing verl (and Ray) takes seconds
    return require("verl", "running ASPO inside verl")


@pytest.fixture
def plugin(verl, monkeypatch):
    """verl_aspo imported afresh, as verl's workers import it (external_lib=verl_aspo): importing registers "aspo"
    (check_loss's loads of the same file register their own copies)."""
    monkeypatch.syspath_prepend(str(ROOT / "integrations"))
    monkeypatch.delitem(sys.modules, "verl_aspo", raising=False)
    return importlib.import_module("verl_aspo")


@pytest.mark.parametrize("ci", ["true", ""])
def test_a_missing_trainer_skips_with_its_reason_but_fails_under_ci(monkeypatch, ci):
    monkeypatch.setenv("CI", ci)
    with pytest.raises(ModuleNotFoundError if ci else pytest.skip.Exception) as e:
        require("no_such_trainer", "running ASPO inside it")
    assert "no_such_trainer" in str(e.value)


def test_the_installed_verl_is_the_pinned_release(verl):
    assert verl.__version__ == PINNED


def test_importing_the_plugin_registers_aspo_in_verls_registry(plugin):
    from verl.trainer.ppo.core_algos import get_policy_loss_fn
    assert get_policy_loss_fn("aspo") is plugin.compute_policy_loss_aspo
    # what 0.9.1's ppo_loss unpacks: (scalar loss, metrics dict), as its vanilla returns
    logp, old, adv, mask = batch(1.0)
    config = user_loss.verl_config(mask, 0.2, 0.28, 3.0)  # verl's ActorConfig, verl being loaded
    out = {mode: get_policy_loss_fn(mode)(old_log_prob=old, log_prob=logp, advantages=adv, response_mask=mask,
                                          config=config) for mode in ("aspo", "vanilla")}
    for loss, metrics in out.values():
        assert loss.shape == () and all(isinstance(v, float) for v in metrics.values())
    assert set(out["aspo"][1]) == set(out["vanilla"][1])


def ppo_loss(loss_mode, logp, old_logp, advantages, mask, loss_agg_mode, rollout_is_weights=None):
    """verl's own actor loss (workers/utils/losses.py) on a batch laid out as its FSDP engine passes one: the
    model's log-probs unpadded (one row of prompt + response tokens after another), the batch as a TensorDict with
    the global token and sequence counts of one process (and the rollout-correction weights where given)."""
    from tensordict import TensorDict
    from verl.utils import tensordict_utils as tu
    from verl.workers.config import FSDPActorConfig, PolicyLossConfig
    from verl.workers.utils.losses import ppo_loss as verl_ppo_loss

    config = FSDPActorConfig(strategy="fsdp", rollout_n=2, ppo_mini_batch_size=2, ppo_micro_batch_size_per_gpu=2,
                             loss_agg_mode=loss_agg_mode, policy_loss=PolicyLossConfig(loss_mode=loss_mode), **CLIP)
    (b, t), prompt = logp.shape, 2
    # the log-prob of response token j is read at position prompt + j - 1 (verl's no_padding_2_padding)
    unpadded = torch.cat([logp.new_zeros(b, prompt - 1), logp, logp.new_zeros(b, 1)], dim=1).reshape(-1)
    data = TensorDict({"prompts": torch.ones(b, prompt, dtype=torch.long),
                       "responses": torch.ones(b, t, dtype=torch.long),
                       "attention_mask": torch.ones(b, prompt + t, dtype=torch.long),
                       "response_mask": mask, "old_log_probs": old_logp, "advantages": advantages}, batch_size=[b])
    if rollout_is_weights is not None:
        data["rollout_is_weights"] = rollout_is_weights
    tu.assign_non_tensor(data, dp_size=1, batch_num_tokens=int(mask.sum()), global_batch_size=b)
    return verl_ppo_loss(config, {"log_probs": unpadded}, data)


def batch(spread):
    """Log-probs with ratios exp(spread * noise), both signs of A, a padded completion."""
    gen = torch.Generator().manual_seed(0)
    old = -torch.rand(4, 5, generator=gen, dtype=torch.float64) * 3
    logp = (old + spread * torch.randn(4, 5, generator=gen, dtype=torch.float64)).requires_grad_(True)
    adv = torch.tensor([1.5, -0.5, 2.0, -1.0], dtype=torch.float64)[:, None].expand(-1, 5).contiguous()
    mask = torch.ones(4, 5, dtype=torch.float64)
    mask[2, 3:] = 0
    return logp, old, adv, mask


@pytest.mark.parametrize("loss_agg_mode", AGG_MODES)
def test_through_verls_ppo_loss_the_plugin_equals_vanilla_at_r_equal_1(plugin, loss_agg_mode):
    logp, _, adv, mask = batch(0.0)
    out = {}
    for mode in ("aspo", "vanilla"):
        loss, metrics = ppo_loss(mode, logp, logp.detach(), adv, mask, loss_agg_mode)
        (grad,) = torch.autograd.grad(loss, logp)
        out[mode] = loss, grad, metrics
    (loss, grad, metrics), (v_loss, v_grad, v_metrics) = out["aspo"], out["vanilla"]
    assert loss.shape == () and torch.equal(loss, v_loss) and torch.equal(grad, v_grad)
    assert grad[mask == 0].abs().max() == 0 and grad[mask > 0].abs().min() > 0  # padding only has no gradient
    assert set(metrics) == set(v_metrics)  # the same metrics for verl's logger, values and aggregation wrapped


def test_through_verls_ppo_loss_the_plugin_has_aspos_gradient_off_policy(plugin):
    logp, old, adv, mask = batch(1.0)  # ratios from about 0.1 to 10: every branch of the weight table
    loss, _ = ppo_loss("aspo", logp, old, adv, mask, "token-mean")  # no entropy, no KL: the policy loss alone
    want, _ = na.policy_loss("aspo", logp, old, adv[:, 0], mask, 0.2, 0.28, 3.0)
    assert loss.item() == pytest.approx(want.item(), rel=1e-12)
    (grad,), (grad_want,) = torch.autograd.grad(loss, logp), torch.autograd.grad(want, logp)
    torch.testing.assert_close(grad, grad_want, rtol=1e-12, atol=1e-15)


def check(capsys, spec, reference):
    """check_loss.main -> (exit code, stdout lines, stderr)."""
    rc = check_loss.main([spec, "--reference", reference])
    cap = capsys.readouterr()
    return rc, cap.out.strip().splitlines(), cap.err


def test_check_loss_passes_the_plugin_inside_verl(verl, capsys):
    rc, out, _ = check(capsys, f"{ROOT / 'integrations' / 'verl_aspo.py'}:compute_policy_loss_aspo", "aspo")
    assert rc == 0 and out[-1] == "all 18 branches match aspo within 0.0001"


def test_check_loss_checks_verls_own_vanilla_and_it_is_grpo(verl, capsys):
    from verl.trainer.ppo import core_algos
    rc, out, _ = check(capsys, f"{core_algos.__file__}:compute_policy_loss_vanilla", "grpo")
    assert rc == 0 and out[-1] == "all 18 branches match grpo within 0.0001"


def test_check_loss_weighs_every_builtin_loss_of_verl(verl, capsys):
    # each gets the config class it asserts (verl's ActorConfig) and every field it reads; only DRO needs a value
    # that has no default (policy_loss.dro_beta), and check_loss says so in one line
    from verl.trainer.ppo import core_algos
    builtins = {name: fn for name, fn in core_algos.POLICY_LOSS_REGISTRY.items()
                if fn.__module__ == core_algos.__name__}  # not plugins such as aspo
    assert len(builtins) >= 10, builtins
    for name, fn in builtins.items():
        rc, out, err = check(capsys, f"{core_algos.__file__}:{fn.__name__}", "grpo")
        if name == "dro":
            assert rc == 2 and "dro_beta must be a positive value" in err and len(err.splitlines()) == 1, err
        else:
            assert rc in (0, 1) and err == "" and any(ln.startswith("closest built-in method") for ln in out), name


def test_the_stand_in_config_has_verls_defaults_for_every_field_it_sets(verl, monkeypatch):
    # without verl loaded, check_loss passes a stand-in; its fields must be what verl's ActorConfig would hold
    from verl.workers.config import ActorConfig
    mask = torch.ones(3, 4)
    real = user_loss.verl_config(mask, 0.2, 0.28, 3.0)
    assert isinstance(real, ActorConfig)
    monkeypatch.delitem(sys.modules, "verl.workers.config")
    stand_in = user_loss.verl_config(mask, 0.2, 0.28, 3.0)
    assert isinstance(stand_in, user_loss.VerlConfig)
    for key, value in stand_in.items():
        if key == "policy_loss":
            assert {k: real.policy_loss[k] for k in value} == value
        else:
            assert real[key] == value, key


def run_python(code, **env):
    """code in a fresh interpreter, with integrations/ on the path as a worker has it; its stdout."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "integrations"), env.pop("PYTHONPATH", "")]),
           **env}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


REGISTERED = ("import verl\nfrom verl.trainer.ppo.core_algos import get_policy_loss_fn\n"
              "print(get_policy_loss_fn('aspo').__module__)")


def plugin_package(folder, module):
    """What `pip install` of a package declaring [project.entry-points."verl.plugins"] aspo = module
    leaves behind in folder."""
    dist = folder / "verl_aspo_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: verl-aspo-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[verl.plugins]\naspo = {module}\n")


def test_verl_loads_the_plugin_from_the_verl_plugins_entry_point_group(verl, tmp_path):
    # verl imports it at `import verl` (0.9.x), with no external_lib and no environment variable
    plugin_package(tmp_path, "verl_aspo")
    assert run_python(REGISTERED, PYTHONPATH=str(tmp_path)) == "verl_aspo"


def test_a_plugin_verl_cannot_load_says_why_where_it_is_imported(verl, tmp_path):
    # verl logs a failing entry point only at debug level; the user would see only "Unsupported
    # loss mode: aspo". An entry point that first makes the running verl look like 0.10.0:
    plugin_package(tmp_path, "as_if_verl_0_10")
    (tmp_path / "as_if_verl_0_10.py").write_text(
        "import sys\nsys.modules['verl'].__version__ = '0.10.0'  # verl is importing its plugins\n"
        "import verl_aspo\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "integrations"), str(tmp_path)])}
    done = subprocess.run([sys.executable, "-c", REGISTERED], env=env, capture_output=True,
                          text=True, timeout=300)
    assert "ValueError: Unsupported loss mode: aspo" in done.stderr  # what verl says, later
    assert ("\nverl_aspo supports verl 0.5 to 0.9 (run inside 0.5.0, 0.6.0, 0.6.1, 0.7.0, 0.7.1, "
            "0.8.0, 0.9.0, 0.9.1); installed: verl 0.10.0\n") in "\n" + done.stderr


def test_verl_use_external_modules_loads_the_plugin(verl):
    assert run_python(REGISTERED, VERL_USE_EXTERNAL_MODULES="verl_aspo", VERL_USE_EXTERNAL_PLUGINS="none") == \
        "verl_aspo"


@pytest.mark.parametrize("version", ["0.4.1", "0.10.0", "1.0.0"])
def test_an_unsupported_verl_is_a_one_line_error_naming_both_versions(verl, monkeypatch, capsys,
                                                                       version):
    monkeypatch.setattr(verl, "__version__", version)
    monkeypatch.syspath_prepend(str(ROOT / "integrations"))
    monkeypatch.delitem(sys.modules, "verl_aspo", raising=False)
    with pytest.raises(ImportError) as e:
        importlib.import_module("verl_aspo")
    assert str(e.value) == ("verl_aspo supports verl 0.5 to 0.9 (run inside 0.5.0, 0.6.0, 0.6.1, 0.7.0, 0.7.1, "
                            f"0.8.0, 0.9.0, 0.9.1); installed: verl {version}")
    assert capsys.readouterr().err == str(e.value) + "\n"  # printed too: see the test above


# ---- the ratio's anchor (ASPO.md §12): loss_mode=aspo_sampler, bypass mode, the config check ----
SAMPLER = {"actor_rollout_ref.actor.policy_loss.loss_mode": "aspo_sampler",
           "algorithm.rollout_correction.rollout_is": "token",
           "algorithm.rollout_correction.rollout_is_threshold": "1e9"}


def stale_batch():
    """(log pi_theta, log pi_prox, log pi_rollout, A, mask): the rollout sampled by weights some
    updates old (pi_prox / pi_rollout about exp(+-0.7)), pi_theta one step's drift from pi_prox."""
    logp, _, adv, mask = batch(0.0)
    gen = torch.Generator().manual_seed(1)
    rollout = logp.detach() - 0.7 * torch.randn(logp.shape, generator=gen, dtype=logp.dtype)
    prox = logp.detach() - 0.3 * torch.randn(logp.shape, generator=gen, dtype=logp.dtype)
    return logp, prox, rollout, adv, mask


def verls_weights(prox, rollout, mask, threshold):
    """rollout_is_weights as verl's trainer adds them to a batch in decoupled mode, token level."""
    from verl.protocol import DataProto
    from verl.trainer.config.algorithm import RolloutCorrectionConfig
    from verl.trainer.ppo.rollout_corr_helper import compute_rollout_correction_and_add_to_batch

    data = DataProto.from_dict(tensors={"old_log_probs": prox, "rollout_log_probs": rollout,
                                        "response_mask": mask})
    config = RolloutCorrectionConfig(rollout_is="token", rollout_is_threshold=threshold)
    data, _ = compute_rollout_correction_and_add_to_batch(data, config)
    return data.batch["rollout_is_weights"]


def loss_and_grad(loss, logp):
    (grad,) = torch.autograd.grad(loss, logp)
    return loss.item(), grad


def test_aspo_sampler_through_verls_ppo_loss_anchors_the_ratio_on_the_rollout(plugin):
    logp, prox, rollout, adv, mask = stale_batch()
    weights = verls_weights(prox, rollout, mask, 1e9)
    got, got_grad = loss_and_grad(
        ppo_loss("aspo_sampler", logp, prox, adv, mask, "token-mean", weights)[0], logp)
    want, want_grad = loss_and_grad(
        na.policy_loss("aspo", logp, rollout, adv[:, 0], mask, 0.2, 0.28, 3.0)[0], logp)
    assert got == pytest.approx(want, rel=1e-12)
    torch.testing.assert_close(got_grad, want_grad, rtol=1e-10, atol=1e-15)
    # not the anchor verl's default gives ASPO (r = pi_theta / pi_prox), nor that times the weights
    for other in (ppo_loss("aspo", logp, prox, adv, mask, "token-mean")[0],
                  ppo_loss("aspo", logp, prox, adv, mask, "token-mean", weights)[0]):
        assert (loss_and_grad(other, logp)[1] - want_grad).abs().max() > 1e-2


@pytest.mark.parametrize("threshold, mark", [
    # verl's TIS, then IcePop (weights outside [0.5, 5] zeroed)
    (2.0, "valid tokens share the largest rollout_is_weight, 2, the mark of truncation"),
    ("0.5_5.0", "rollout_is_weights are 0 on"),
])
def test_aspo_sampler_refuses_weights_verl_truncated_or_masked(plugin, threshold, mark):
    # anchored on such weights r would be min(r, 2 pi_theta / pi_prox), or rejected positive tokens
    # would get the weight c (their rebuilt pi_rollout +inf): a one-line error instead
    logp, prox, rollout, adv, mask = stale_batch()
    weights = verls_weights(prox, rollout, mask, threshold)
    raw = (prox - rollout).exp()[mask > 0]
    assert ((raw > 2).sum() > 1 if threshold == 2.0 else ((raw < 0.5) | (raw > 5)).any())
    with pytest.raises(ValueError) as e:
        ppo_loss("aspo_sampler", logp, prox, adv, mask, "token-mean", weights)
    assert mark in str(e.value) and "\n" not in str(e.value)
    assert str(e.value).endswith("set algorithm.rollout_correction.rollout_is_threshold=1e9"
                                 + (" (never binds)" if threshold == 2.0 else ""))


def test_aspo_sampler_takes_untruncated_weights_that_tie(plugin):
    # not refused: every weight exactly 1 (pi_prox = pi_rollout to the bit), and the largest
    # weight shared by tokens with the same old log-prob (one token after one prefix, in several
    # completions)
    logp, prox, rollout, adv, mask = stale_batch()
    for prox_, rollout_ in ((prox, prox), (prox, rollout)):
        prox_, rollout_ = prox_.clone(), rollout_.clone()
        top = (prox_ - rollout_)[mask > 0].argmax()
        prox_[1, 0], rollout_[1, 0] = prox_[mask > 0][top], rollout_[mask > 0][top]  # the tie
        weights = verls_weights(prox_, rollout_, mask, 1e9)
        assert (weights[mask > 0] == weights[mask > 0].max()).sum() >= 2
        got = loss_and_grad(ppo_loss("aspo_sampler", logp, prox_, adv, mask, "token-mean",
                                     weights)[0], logp)[1]
        want = loss_and_grad(na.policy_loss("aspo", logp, rollout_, adv[:, 0], mask)[0], logp)[1]
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-15)


def test_aspo_sampler_without_weights_is_a_one_line_error_naming_the_settings(plugin):
    logp, prox, _, adv, mask = stale_batch()
    with pytest.raises(ValueError) as e:
        ppo_loss("aspo_sampler", logp, prox, adv, mask, "token-mean")
    assert str(e.value) == (
        "loss_mode=aspo_sampler got no rollout_is_weights: set algorithm.rollout_correction."
        "bypass_mode=False, algorithm.rollout_correction.rollout_is=token, algorithm."
        "rollout_correction.rollout_is_threshold=1e9, algorithm.rollout_correction."
        "rollout_is_batch_normalize=False, actor_rollout_ref.rollout.calculate_log_probs=True")


def test_aspo_sampler_in_an_older_verl_is_a_one_line_error_naming_the_version(plugin, monkeypatch):
    monkeypatch.setattr(plugin.verl, "__version__", "0.8.0")
    logp, prox, rollout, adv, mask = stale_batch()
    with pytest.raises(ValueError) as e:
        ppo_loss("aspo_sampler", logp, prox, adv, mask, "token-mean", torch.ones_like(mask))
    assert str(e.value) == ("loss_mode=aspo_sampler needs verl 0.9 (its decoupled rollout "
                            "correction, tested inside 0.9.1); installed: verl 0.8.0")


def test_verls_bypass_mode_replaces_the_registered_loss(plugin):
    # pins what the config check warns about: with bypass_mode the trainer sets old_log_probs to the
    # rollout's and loss_mode to its own "bypass_mode", whatever loss_mode was
    from importlib.util import find_spec

    from omegaconf import OmegaConf
    from verl.protocol import DataProto
    from verl.trainer.ppo.rollout_corr_helper import apply_bypass_mode

    logp, prox, rollout, adv, mask = stale_batch()
    data = DataProto.from_dict(tensors={"old_log_probs": prox, "rollout_log_probs": rollout})
    policy_loss = OmegaConf.create({"loss_mode": "aspo"})
    apply_bypass_mode(data, OmegaConf.create({"bypass_mode": True}), policy_loss)
    assert policy_loss.loss_mode == "bypass_mode"
    assert torch.equal(data.batch["old_log_probs"], rollout)
    # and the trainer calls it on the actor's policy-loss config (read, not imported: importing
    # ray_trainer needs torchdata, which the CI's --no-deps verl lacks)
    trainer = " ".join(open(find_spec("verl.trainer.ppo.ray_trainer").origin).read().split())
    assert ('bypass_recomputing_logprobs = rollout_corr_config and rollout_corr_config.get('
            '"bypass_mode", False) if bypass_recomputing_logprobs:') in trainer
    assert "policy_loss_config=self.config.actor_rollout_ref.actor.policy_loss," in trainer


def findings(plugin, overrides, recipe=None, version=None):
    config = plugin.load_config([f"{k}={v}" for k, v in overrides.items()], recipe)
    return plugin.config_findings(config, version or plugin.verl.__version__)


def verl_recipe(name):
    from pathlib import Path
    return Path(importlib.import_module("verl").__file__).parent / "experimental" / name


ASPO = {"actor_rollout_ref.actor.policy_loss.loss_mode": "aspo"}
RC = "algorithm.rollout_correction."


def test_the_config_check_passes_verls_default_and_the_sampler_settings(plugin):
    # verl's default: 1024 prompts in mini-batches of 256, so 3 of 4 updates see r != 1
    assert findings(plugin, ASPO) == []
    assert findings(plugin, SAMPLER) == []
    assert findings(plugin, {**ASPO, RC + "rollout_is": "token"}) == []  # the decoupled anchor
    # not ASPO: nothing to say
    assert findings(plugin, {RC + "bypass_mode": True, "data.train_batch_size": 256}) == []


@pytest.mark.parametrize("overrides, level, setting", [
    ({**ASPO, RC + "bypass_mode": True}, "error", RC + "bypass_mode=True"),
    ({**SAMPLER, RC + "bypass_mode": True}, "error", RC + "bypass_mode=True"),
    ({**ASPO, "data.train_batch_size": 256}, "warning", "actor_rollout_ref.actor.ppo_epochs=1"),
    ({**SAMPLER, RC + "rollout_is": "sequence"}, "error", RC + "rollout_is=sequence"),
    ({**SAMPLER, RC + "rollout_is": "null"}, "error", RC + "rollout_is=None"),
    ({**SAMPLER, RC + "rollout_is_threshold": 2.0}, "error", RC + "rollout_is_threshold=2.0"),
    ({**SAMPLER, RC + "rollout_is_threshold": "'0.5_1e9'"}, "error",  # IcePop
     RC + "rollout_is_threshold=0.5_1e9"),
    ({**SAMPLER, RC + "rollout_is_batch_normalize": True}, "error",
     RC + "rollout_is_batch_normalize=True"),
    ({**SAMPLER, "actor_rollout_ref.rollout.calculate_log_probs": False}, "error",
     "actor_rollout_ref.rollout.calculate_log_probs=False"),
    ({**ASPO, "actor_rollout_ref.actor.use_rollout_log_probs": True}, "warning",
     "actor_rollout_ref.actor.use_rollout_log_probs=True"),
])
def test_the_config_check_names_the_setting(plugin, overrides, level, setting):
    found = findings(plugin, overrides)
    assert [(lvl, first_word(line)) for lvl, line in found] == [(level, setting)]


def first_word(line):
    return line.split()[0].rstrip(":")


def test_the_config_check_refuses_aspo_in_verls_async_recipes(plugin):
    # verl 0.9.1's fully-async and one-step-off recipes turn bypass mode on (ASPO.md §12)
    for recipe in ("fully_async_policy/config/fully_async_ppo_trainer.yaml",
                   "one_step_off_policy/config/one_step_off_ppo_trainer.yaml"):
        found = findings(plugin, ASPO, verl_recipe(recipe))
        assert ("error", RC + "bypass_mode=True") in [(lvl, first_word(ln)) for lvl, ln in found]


def test_the_config_check_names_an_older_verl_for_the_sampler(plugin):
    assert findings(plugin, SAMPLER, version="0.8.0") == [("error", (
        "loss_mode=aspo_sampler needs verl 0.9 (its decoupled rollout correction, tested inside "
        "0.9.1); installed: verl 0.8.0"))]


def test_check_config_warns_and_refuses(plugin):
    with pytest.warns(UserWarning, match=r"^actor_rollout_ref\.actor\.ppo_epochs=1 "):
        plugin.check_config(plugin.load_config(["data.train_batch_size=256", "+" + "=".join(
            next(iter(ASPO.items())))]))
    with pytest.raises(ValueError, match=r"^algorithm\.rollout_correction\.bypass_mode=True: "):
        plugin.check_config(plugin.load_config(
            [f"{k}={v}" for k, v in {**SAMPLER, RC + "bypass_mode": True}.items()]))


def test_the_config_check_from_the_command_line(verl):
    script = str(ROOT / "integrations" / "verl_aspo.py")
    run = [sys.executable, script, *(f"{k}={v}" for k, v in ASPO.items())]
    ok = subprocess.run(run, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0
    assert ok.stdout == "ok: nothing found that replaces ASPO or leaves it r = 1\n"
    bad = subprocess.run(run + ["--config", str(verl_recipe(
        "fully_async_policy/config/fully_async_ppo_trainer.yaml"))], capture_output=True, text=True,
        timeout=300)
    assert bad.returncode == 1 and bad.stdout.startswith("error: " + RC + "bypass_mode=True: ")
