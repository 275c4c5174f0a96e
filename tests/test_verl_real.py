"""integrations/verl_aspo.py and integrations/check_loss.py inside a real verl, the release
integrations/requirements-verl.txt pins: registration and retrieval through verl's own registry and
plugin loaders, the call exactly as that release's loss path makes it
(verl.workers.utils.losses.ppo_loss with its FSDPActorConfig and its aggregation), what it returns,
equality with verl's vanilla at r = 1, and check_loss on the plugin and on verl's own losses; the
ratio's anchor by trainer: the default (v1) trainer's own code for bypass mode, run with a stand-in
for its transfer queue, then ppo_loss, against nano-aspo's ASPO on the rollout; aspo_sampler and
its refusals; the configuration check. Skipped without verl (the reason shows in the summary);
under CI a missing verl fails (conftest.require)."""
import ast
import importlib
import os
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

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


# ---- bypass mode, by trainer (verl 0.9.1): what each sets old_log_probs and loss_mode to ----
def verl_file(relative):
    """A source file of the installed verl, found without importing the module (importing verl's
    trainers needs transfer_queue, torchdata, hydra, ..., which CI's --no-deps verl lacks)."""
    from importlib.util import find_spec
    return Path(find_spec("verl").origin).parent / relative


def verl_methods(relative, wanted, namespace):
    """verl's classes in one source file, each with only the methods named, compiled from the
    installed file as they stand and run into namespace, where their other names resolve."""
    path = verl_file(relative)
    tree = ast.parse(path.read_text(), str(path))
    classes = [node for node in tree.body if isinstance(node, ast.ClassDef) and node.name in wanted]
    for node in classes:
        node.body = [f for f in node.body if isinstance(f, ast.FunctionDef)
                     and f.name in wanted[node.name]]
        node.decorator_list = []  # verl's trainer registry, not imported
        assert sorted(f.name for f in node.body) == sorted(wanted[node.name]), (relative, node.name)
    assert sorted(node.name for node in classes) == sorted(wanted), relative
    exec(compile(ast.Module(classes, []), str(path), "exec"), namespace)


class TransferQueueStandIn:
    """Stands in for transfer_queue, where verl's v1 trainers keep the batch between their steps: a
    store of Ray actors (the TransferQueue package, not installed by CI's --no-deps verl, and a Ray
    cluster). Per-sample fields by key, read back as verl's list_of_dict_to_tensordict lays them
    out (a jagged tensor for fields of varying length)."""

    def __init__(self, samples):
        self.samples = samples

    def kv_batch_get(self, keys, partition_id, select_fields):
        from verl.utils import tensordict_utils as tu
        return tu.list_of_dict_to_tensordict([{f: self.samples[key][f] for f in select_fields}
                                              for key in keys])

    def kv_batch_put(self, keys, partition_id, fields):
        for i, key in enumerate(keys):
            self.samples[key].update({name: fields[name][i] for name in fields.keys()})
        return SimpleNamespace(keys=keys, partition_id=partition_id, extra_info={})


class NoRecompute:
    """The actor worker group: bypass mode must not ask it for a forward pass."""

    def __getattr__(self, name):
        raise RecomputeRequested(name)


class RecomputeRequested(Exception):
    pass


# one ratio in each range of ASPO's weight table (ASPO.md §5), between 1/c, 1-eps_low, 1,
# 1+eps_high and c
PROBE_R = [0.25, 0.5, 0.9, 1.1, 1.6, 4.0]


def v1_trainers(samples):
    """verl's v1 PPOTrainer and PPOTrainerSeparateAsync, with _compute_old_log_prob only, on a
    stand-in transfer queue holding samples."""
    from abc import ABC
    namespace = {"ABC": ABC, "KVBatchMeta": SimpleNamespace, "tq": TransferQueueStandIn(samples)}
    verl_methods("trainer/ppo/v1/trainer_base.py", {"PPOTrainer": ["_compute_old_log_prob"]},
                 namespace)
    verl_methods("trainer/ppo/v1/trainer_separate_async.py",
                 {"PPOTrainerSeparateAsync": ["_compute_old_log_prob"]}, namespace)
    return namespace["tq"], namespace["PPOTrainer"], namespace["PPOTrainerSeparateAsync"]


def stale_samples():
    """Four completions as verl's rollout leaves them in the transfer queue (jagged: prompts and
    responses of different lengths), their rollout log-probs stale by PROBE_R (r = pi_theta /
    pi_rollout runs through every range of §5 for both signs of A); and pi_theta's log-probs."""
    gen = torch.Generator().manual_seed(0)
    samples, logps = {}, []
    for i, (n, a) in enumerate(zip([6, 4, 6, 5], [1.5, -0.5, 2.0, -1.0])):
        logp = -torch.rand(n, generator=gen, dtype=torch.float64) * 3
        r = torch.tensor((PROBE_R * 2)[i:i + n], dtype=torch.float64)
        samples[f"uid{i}_0_0"] = {"prompts": torch.ones(2 + i % 2, dtype=torch.long),
                                  "responses": torch.ones(n, dtype=torch.long),
                                  "response_mask": torch.ones(n, dtype=torch.long),
                                  "rollout_log_probs": logp - r.log(),
                                  "advantages": torch.full((n,), a, dtype=torch.float64)}
        logps.append(logp.requires_grad_(True))
    return samples, logps


def padded(rows):
    width = max(len(row) for row in rows)
    return torch.stack([torch.cat([row, row.new_zeros(width - len(row))]) for row in rows])


def test_the_v1_trainer_under_bypass_hands_aspo_the_sampler_anchor(plugin):
    """verl 0.9.1's default trainer (v1) in bypass mode: its own _compute_old_log_prob (stand-in:
    the transfer queue) copies rollout_log_probs into old_log_probs without a forward pass, and
    the worker's own ppo_loss with loss_mode=aspo then equals nano-aspo's ASPO anchored on the
    rollout, loss and gradient, on a batch that reaches every branch of the weight table."""
    from verl.utils import tensordict_utils as tu
    from verl.workers.config import FSDPActorConfig, PolicyLossConfig
    from verl.workers.utils.losses import ppo_loss as verl_ppo_loss

    samples, logps = stale_samples()
    tq, base, separate_async = v1_trainers(samples)
    config = plugin.load_config([f"{k}={v}" for k, v in ASPO.items()]
                                + [RC + "bypass_mode=True", ACTOR + "clip_ratio_high=0.28"])
    assert config.trainer.use_v1 and plugin.trainer_in_use(config) == "v1"
    for trainer_class, attributes in ((base, {}), (separate_async, {"local_trigger_step": 1})):
        trainer = trainer_class.__new__(trainer_class)
        trainer.__dict__.update(config=config, actor_rollout_wg=NoRecompute(), **attributes)
        keys = list(samples)
        batch = SimpleNamespace(keys=keys, partition_id="train", extra_info={})
        assert trainer._compute_old_log_prob(batch, metrics={}) is batch
        for key in keys:
            assert torch.equal(samples[key]["old_log_probs"], samples[key]["rollout_log_probs"])

    # the worker: its actor config from the same trainer config, the batch as the queue hands it
    actor = config.actor_rollout_ref.actor
    worker_config = FSDPActorConfig(
        strategy="fsdp", rollout_n=1, ppo_mini_batch_size=4, ppo_micro_batch_size_per_gpu=4,
        loss_agg_mode=actor.loss_agg_mode, policy_loss=PolicyLossConfig(
            loss_mode=actor.policy_loss.loss_mode), clip_ratio=actor.clip_ratio,
        clip_ratio_low=actor.clip_ratio_low, clip_ratio_high=actor.clip_ratio_high,
        clip_ratio_c=actor.clip_ratio_c)
    data = tq.kv_batch_get(keys, "train", ["prompts", "responses", "response_mask",
                                           "old_log_probs", "advantages"])
    assert "rollout_is_weights" not in data  # bypass: _compute_advantage adds none
    tokens = sum(len(logp) for logp in logps)
    tu.assign_non_tensor(data, dp_size=1, batch_num_tokens=tokens, global_batch_size=len(keys))
    # the model's log-probs unpadded, response token j read at position prompt + j - 1
    unpadded = torch.cat([torch.cat([logp.new_zeros(len(samples[key]["prompts"]) - 1), logp,
                                     logp.new_zeros(1)]) for key, logp in zip(keys, logps)])
    loss, _ = verl_ppo_loss(worker_config, {"log_probs": unpadded}, data)

    logp, mask = padded(logps), padded([torch.ones(len(lp), dtype=torch.float64) for lp in logps])
    rollout = padded([samples[key]["rollout_log_probs"] for key in keys])
    advantages = torch.tensor([samples[key]["advantages"][0] for key in keys])
    want, metrics = na.policy_loss("aspo", logp, rollout, advantages, mask, 0.2, 0.28, 3.0)
    ratio = (logp - rollout).exp()[mask > 0]
    positive = advantages[:, None].expand_as(mask)[mask > 0] > 0
    edges = torch.tensor([1 / 3, 0.8, 1, 1.28, 3], dtype=ratio.dtype)  # 1/c, 1-eps_low, 1, ...
    for side in (positive, ~positive):  # every range of §5, for both signs of A
        assert torch.bucketize(ratio[side], edges).unique().numel() == 6
    assert loss.item() == pytest.approx(want.item(), rel=1e-12)
    for got, expected in zip(torch.autograd.grad(loss, logps), torch.autograd.grad(want, logps)):
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-15)


def test_the_v1_trainer_without_bypass_recomputes_the_old_log_probs(plugin):
    # the same code, bypass off: it asks the actor for a forward pass (the decoupled anchor)
    samples, _ = stale_samples()
    _, base, separate_async = v1_trainers(samples)
    config = plugin.load_config([f"{k}={v}" for k, v in ASPO.items()])
    for trainer_class, asked in ((base, "compute_log_prob"), (separate_async, "save_model_to_cpu")):
        trainer = trainer_class.__new__(trainer_class)
        trainer.__dict__.update(config=config, actor_rollout_wg=NoRecompute(), local_trigger_step=1)
        batch = SimpleNamespace(keys=list(samples), partition_id="train", extra_info={})
        with pytest.raises(RecomputeRequested, match=f"^{asked}$"):
            trainer._compute_old_log_prob(batch, metrics={})


def calls_to(relative, function):
    """{name of the enclosing function: [the call's keyword arguments as source]} for each call
    of function in one verl source file."""
    tree = ast.parse(verl_file(relative).read_text())
    found = {}
    for outer in ast.walk(tree):
        if isinstance(outer, ast.FunctionDef):
            for node in ast.walk(outer):
                if isinstance(node, ast.Call) and getattr(node.func, "id", None) == function:
                    found[outer.name] = [ast.unparse(k) for k in node.keywords]
    return found


def test_which_verl_trainers_rewrite_loss_mode_under_bypass(plugin):
    """The default trainer's config and modes, and which trainers call apply_bypass_mode (read in
    the wheel: those trainers need Ray and GPUs), and what apply_bypass_mode does (run)."""
    from omegaconf import OmegaConf
    from verl.protocol import DataProto
    from verl.trainer.ppo.rollout_corr_helper import apply_bypass_mode

    config = plugin.load_config([])
    assert config.trainer.use_v1 and config.trainer.v1.trainer_mode == "sync"
    assert config.trainer.v1.separate_async.parameter_sync_step == 4
    assert config.trainer.v1.sampler.max_off_policy_threshold == 8
    assert "if config.trainer.use_v1:" in verl_file("trainer/main_ppo.py").read_text()
    # the v1 modes: sync and colocate_async inherit PPOTrainer's _compute_old_log_prob (the test
    # above runs it, and separate_async's), and no v1 file calls apply_bypass_mode
    for mode in ("sync", "colocate_async"):
        tree = ast.parse(verl_file(f"trainer/ppo/v1/trainer_{mode}.py").read_text())
        methods = {f.name for node in tree.body if isinstance(node, ast.ClassDef)
                   for f in node.body if isinstance(f, ast.FunctionDef)}
        assert methods and "_compute_old_log_prob" not in methods, mode
    for path in verl_file("trainer/ppo/v1").glob("*.py"):
        assert "apply_bypass_mode" not in path.read_text(), path.name
    # the legacy and the separation trainers call it on the driver's actor policy-loss config
    driver = "policy_loss_config=self.config.actor_rollout_ref.actor.policy_loss"
    assert driver in calls_to("trainer/ppo/ray_trainer.py", "apply_bypass_mode")["fit"]
    assert driver in calls_to("experimental/separation/ray_trainer.py",
                              "apply_bypass_mode")["_fit_compute_log_prob"]
    # which rewrites loss_mode in the config it is given (whether the workers, built before with
    # their own copy, ever see it is not run here: verl issue 4912, PR 4930)
    logp, prox, rollout, adv, mask = stale_batch()
    data = DataProto.from_dict(tensors={"old_log_probs": prox, "rollout_log_probs": rollout})
    policy_loss = OmegaConf.create({"loss_mode": "aspo"})
    apply_bypass_mode(data, OmegaConf.create({"bypass_mode": True}), policy_loss)
    assert policy_loss.loss_mode == "bypass_mode"
    assert torch.equal(data.batch["old_log_probs"], rollout)


def findings(plugin, overrides, recipe=None, version=None):
    config = plugin.load_config([f"{k}={v}" for k, v in overrides.items()], recipe)
    return plugin.config_findings(config, version or plugin.verl.__version__)


def verl_recipe(name):
    from pathlib import Path
    return Path(importlib.import_module("verl").__file__).parent / "experimental" / name


ASPO = {"actor_rollout_ref.actor.policy_loss.loss_mode": "aspo"}
RC = "algorithm.rollout_correction."
ACTOR = "actor_rollout_ref.actor."


def test_the_config_check_passes_verls_default_and_the_sampler_settings(plugin):
    # verl's default: 1024 prompts in mini-batches of 256, so 3 of 4 updates see r != 1
    assert findings(plugin, ASPO) == []
    assert findings(plugin, SAMPLER) == []
    assert findings(plugin, {**ASPO, RC + "rollout_is": "token"}) == []  # the decoupled anchor
    # not ASPO: nothing to say
    assert findings(plugin, {RC + "bypass_mode": True, "data.train_batch_size": 256}) == []


BYPASS = {**ASPO, RC + "bypass_mode": True}
NOTE = ("note", RC + "bypass_mode=True")  # the v1 trainer in bypass mode: the sampler anchor


@pytest.mark.parametrize("overrides, expected", [
    (BYPASS, [NOTE]),
    ({**BYPASS, "trainer.v1.trainer_mode": "colocate_async", "data.train_batch_size": 256}, [NOTE]),
    ({**BYPASS, "trainer.v1.trainer_mode": "separate_async"}, [NOTE]),
    ({**BYPASS, "trainer.use_v1": False}, [("warning", RC + "bypass_mode=True")]),
    ({**SAMPLER, RC + "bypass_mode": True}, [("error", RC + "bypass_mode=True")]),
    ({**BYPASS, "actor_rollout_ref.rollout.calculate_log_probs": False},
     [("error", "actor_rollout_ref.rollout.calculate_log_probs=False"), NOTE]),
    ({**BYPASS, RC + "rollout_is": "token"}, [NOTE, ("warning", RC + "rollout_is=token")]),
    ({**BYPASS, "data.train_batch_size": 256},
     [NOTE, ("warning", "actor_rollout_ref.actor.ppo_epochs=1")]),
    ({**ASPO, "data.train_batch_size": 256}, [("warning", "actor_rollout_ref.actor.ppo_epochs=1")]),
    ({**SAMPLER, RC + "rollout_is": "sequence"}, [("error", RC + "rollout_is=sequence")]),
    ({**SAMPLER, RC + "rollout_is": "null"}, [("error", RC + "rollout_is=None")]),
    ({**SAMPLER, RC + "rollout_is_threshold": 2.0}, [("error", RC + "rollout_is_threshold=2.0")]),
    ({**SAMPLER, RC + "rollout_is_threshold": "'0.5_1e9'"},  # IcePop
     [("error", RC + "rollout_is_threshold=0.5_1e9")]),
    ({**SAMPLER, RC + "rollout_is_batch_normalize": True},
     [("error", RC + "rollout_is_batch_normalize=True")]),
    ({**SAMPLER, "actor_rollout_ref.rollout.calculate_log_probs": False},
     [("error", "actor_rollout_ref.rollout.calculate_log_probs=False")]),
    ({**ASPO, "actor_rollout_ref.actor.use_rollout_log_probs": True},
     [("warning", "actor_rollout_ref.actor.use_rollout_log_probs=True")]),
])
def test_the_config_check_names_the_setting(plugin, overrides, expected):
    found = findings(plugin, overrides)
    assert [(lvl, first_word(line)) for lvl, line in found] == expected


def first_word(line):
    return line.split()[0].rstrip(":")


def test_the_config_check_names_the_trainer_and_what_it_does_under_bypass(plugin):
    (note,) = [line for _, line in findings(plugin, {
        **BYPASS, "trainer.v1.trainer_mode": "separate_async"})]
    assert ("trainer/ppo/v1/trainer_base.py, PPOTrainer._compute_old_log_prob" in note
            and "trainer_mode=separate_async" in note and "r = pi_theta / pi_rollout" in note)
    (warning,) = [line for _, line in findings(plugin, {**BYPASS, "trainer.use_v1": False})]
    assert all(part in warning for part in (
        "trainer/ppo/ray_trainer.py, RayPPOTrainer.fit", "apply_bypass_mode",
        "loss_mode=bypass_mode", "verl issue 4912, PR 4930", "not run here"))


def test_the_config_check_warns_of_verls_async_recipes(plugin):
    # verl 0.9.1's fully-async and one-step-off recipes turn bypass mode on and run the separation
    # trainer, which calls apply_bypass_mode (ASPO.md §12): a warning, not a refusal
    for recipe in ("fully_async_policy/config/fully_async_ppo_trainer.yaml",
                   "one_step_off_policy/config/one_step_off_ppo_trainer.yaml"):
        found = findings(plugin, ASPO, verl_recipe(recipe))
        assert [lvl for lvl, _ in found if lvl == "error"] == []
        (line,) = [ln for lvl, ln in found if first_word(ln) == RC + "bypass_mode=True"]
        assert "separation/ray_trainer.py, SeparateRayPPOTrainer._fit_compute_log_prob" in line


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
    with warnings.catch_warnings():  # the v1 trainer in bypass mode: nothing to warn of
        warnings.simplefilter("error")
        plugin.check_config(plugin.load_config([f"{k}={v}" for k, v in BYPASS.items()]))


@pytest.mark.parametrize("overrides, message", [
    (["foo"], "verl_aspo: cannot read the override 'foo': this check takes KEY=VALUE"),
    (["~trainer.use_v1"], "verl_aspo: cannot read the override '~trainer.use_v1'"),
    (["a.b=[1,2"], "verl_aspo: cannot read the overrides: "),
    ([ACTOR + "ppo_epochs=${nope}"], f"verl_aspo: cannot read {ACTOR}ppo_epochs from the config: "
                                     "Interpolation key 'nope' not found"),
])
def test_a_config_the_check_cannot_read_is_a_one_line_error(plugin, overrides, message):
    with pytest.raises(ValueError) as e:
        plugin.check_config(plugin.load_config([f"{k}={v}" for k, v in ASPO.items()] + overrides))
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_check_config_takes_a_dict_and_names_what_it_cannot_take(plugin):
    plugin.check_config({"actor_rollout_ref": {"actor": {"policy_loss": {"loss_mode": "aspo"}}}})
    with pytest.raises(TypeError, match=r"^verl_aspo\.check_config takes verl's trainer config "
                                        r"\(an OmegaConf DictConfig or a dict\), got str$"):
        plugin.check_config("trainer.yaml")


def test_the_config_check_from_the_command_line(verl):
    script = str(ROOT / "integrations" / "verl_aspo.py")
    run = [sys.executable, script, *(f"{k}={v}" for k, v in ASPO.items())]
    ok = subprocess.run(run, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0
    assert ok.stdout == "ok: nothing found that replaces ASPO or leaves it r = 1\n"
    recipe = subprocess.run(run + ["--config", str(verl_recipe(
        "fully_async_policy/config/fully_async_ppo_trainer.yaml"))], capture_output=True, text=True,
        timeout=300)
    assert recipe.returncode == 0
    assert recipe.stdout.startswith("warning: " + RC + "bypass_mode=True in verl's separation")


def test_the_config_checks_exit_codes_and_one_line_errors(plugin, capsys, tmp_path):
    # main(), in this process (each command line above imports verl afresh, ~5 s)
    aspo = [f"{k}={v}" for k, v in ASPO.items()]
    assert plugin.main(aspo + [RC + "bypass_mode=True"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("note: " + RC + "bypass_mode=True in verl's default v1 trainer")
    assert out.endswith("\nok: nothing found that replaces ASPO or leaves it r = 1\n")
    assert plugin.main(aspo + [RC + "bypass_mode=True", ACTOR + "policy_loss.loss_mode="
                               "aspo_sampler"]) == 1
    assert capsys.readouterr().out.startswith("error: " + RC + "bypass_mode=True: ")
    (tmp_path / "bad.yaml").write_text("a: [1, 2\n")
    for extra in (["--config", str(tmp_path / "missing.yaml")], ["--config",
                  str(tmp_path / "bad.yaml")], ["foo"]):
        assert plugin.main(aspo + extra) == 2, extra
        cap = capsys.readouterr()
        assert cap.out == "" and cap.err.startswith("verl_aspo: cannot read ")
        assert cap.err.count("\n") == 1, cap.err
