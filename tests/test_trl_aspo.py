"""integrations/trl_aspo.py inside a real TRL, the release integrations/requirements.txt pins: two optimizer steps
on CPU with a 1-layer GPT-2 built from a config and a tokenizer built in memory (nothing downloaded), TRL's KL
term, entropy bonus and metrics kept, the per-token weights measured inside TRL's own loss computation against
ASPO's table (computed by nano_aspo.policy_loss), dropout, and the one-line errors.
Skipped without TRL (the reason shows in the summary); under CI a missing TRL fails (conftest.require)."""
import importlib
import math
import sys

import pytest
import torch

import nano_aspo as na
from conftest import ROOT, require

PINNED = next(line.split("==")[1].strip() for line in (ROOT / "integrations" / "requirements.txt").read_text()
              .splitlines() if line.startswith("trl=="))
CHARS = "abcdefgh"
EPS_LOW, EPS_HIGH, CLIP_C = 0.2, 0.28, 3.0
# one probe ratio per completion token: position 0 at r = 1 (w = 1, the unit of the row), then one interior point
# of each range between 1/c, 1-eps_low, 1, 1+eps_high and c (ASPO.md §5)
PROBE_R = [1.0, 0.25, 0.5, 0.9, 1.1, 1.6, 4.0]


def integration(module, what):
    """integrations/<module>, imported as a user's script imports it (integrations/ on the path);
    TRL is required (conftest.require)."""
    require("trl", what)
    sys.path.insert(0, str(ROOT / "integrations"))
    try:
        return importlib.import_module(module)
    finally:
        sys.path.remove(str(ROOT / "integrations"))


@pytest.fixture(scope="module")
def trl_aspo():
    return integration("trl_aspo", "running ASPO inside TRL")


def char_tokenizer():
    """A tokenizer over <pad>, <eos> (ids 0, 1) and CHARS, one token per character, built here."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {ch: i for i, ch in enumerate(["<pad>", "<eos>", *CHARS])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")


def tiny_gpt2_and_tokenizer(dropout=0.1):
    """A 1-layer GPT-2 (GPT-2's default dropout 0.1 unless told) over a character vocabulary, both built here."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = char_tokenizer()
    vocab = tokenizer.get_vocab()
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(vocab), n_positions=32, n_embd=16, n_layer=1, n_head=2,
                        resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout,
                        bos_token_id=1, eos_token_id=1, pad_token_id=0)
    return GPT2LMHeadModel(config), tokenizer


def count_a(completions, **kwargs):
    """Reward: the share of a's in the completion (so a group's completions get different advantages)."""
    return [c.count("a") / max(len(c), 1) for c in completions]


def train(trl_aspo, tmp_path, trainer_class=None, dropout=0.1, **overrides):
    """Two optimizer steps of ASPOTrainer (or trainer_class); the trainer."""
    trainer = build(trl_aspo, tmp_path, trainer_class, dropout, **overrides)
    trainer.train()
    return trainer


def build(trl_aspo, tmp_path, trainer_class=None, dropout=0.1, **overrides):
    """ASPOTrainer (or trainer_class) on the tiny GPT-2, not yet trained."""
    from datasets import Dataset

    model, tokenizer = tiny_gpt2_and_tokenizer(dropout)
    # saved and passed by path: with beta > 0 TRL loads its reference model from the path of the model's config
    model.save_pretrained(tmp_path / "gpt2")
    settings = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, num_generations=4,
                    max_completion_length=len(PROBE_R), max_steps=2, learning_rate=1e-2, logging_steps=1,
                    report_to="none", save_strategy="no", use_cpu=True, seed=0, epsilon=EPS_LOW,
                    epsilon_high=EPS_HIGH, aspo_clip_c=CLIP_C,
                    steps_per_generation=2)  # the second step reuses the first's samples: r != 1 there
    args = trl_aspo.ASPOConfig(**{**settings, **overrides})
    dataset = Dataset.from_dict({"prompt": ["abc", "bcd", "cde", "def"] * 2})
    return (trainer_class or trl_aspo.ASPOTrainer)(model=str(tmp_path / "gpt2"), reward_funcs=count_a,
                                                   args=args, train_dataset=dataset,
                                                   processing_class=tokenizer)


def test_the_installed_trl_is_the_pinned_release(trl_aspo):
    import trl
    assert trl.__version__ == PINNED


def test_two_steps_train_with_trls_kl_entropy_bonus_and_metrics(trl_aspo, tmp_path):
    trainer = train(trl_aspo, tmp_path, beta=0.05, entropy_coef=0.01)
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert trainer.state.global_step == 2 and len(logs) == 2
    for entry in logs:
        for key in ("loss", "kl", "entropy", "entropy_coef", "policy_loss", "clip_ratio/low_mean",
                    "clip_ratio/high_mean", "clip_ratio/region_mean", "clip_ratio/dual_mean", "aspo/weight_mean"):
            assert math.isfinite(entry[key]), (key, entry)
        assert "vespo/phi_seq_mean" not in entry  # renamed: it is ASPO's weight
    assert logs[1]["kl"] > 0  # the policy moved away from the reference after the first step


class Probe:
    """Mixed into a trainer: inside TRL's _compute_loss, sets each token's ratio to PROBE_R (through the
    old log-probs TRL reads) and each completion's advantage to +1 / -1 alternately, and keeps the gradient
    of the loss with respect to TRL's per-token log-probs."""

    def _compute_loss(self, model, inputs):
        self.probe_inputs, self.probe = inputs, {}
        return super()._compute_loss(model, inputs)

    def _get_per_token_logps_and_entropies(self, *args, **kwargs):
        logps, entropies, aux = super()._get_per_token_logps_and_entropies(*args, **kwargs)
        if getattr(self, "probe_inputs", None) is not None:  # the call inside _compute_loss, not a rollout's
            ratios = torch.tensor(PROBE_R[:logps.shape[1]], dtype=logps.dtype).expand_as(logps)
            self.probe_inputs["old_per_token_logps"] = logps.detach() - ratios.log()
            signs = torch.tensor([1.0, -1.0]).repeat(logps.shape[0] // 2)
            self.probe_inputs["advantages"] = signs
            self.probe.update(ratios=ratios, signs=signs, mask=self.probe_inputs["completion_mask"].float())
            logps.register_hook(lambda grad: self.probe.setdefault("grad", grad.detach().clone()))
            self.probe_inputs = None
        return logps, entropies, aux


def test_per_token_weights_measured_inside_trl_are_aspos(trl_aspo, tmp_path):
    weights = []

    class ProbedASPOTrainer(Probe, trl_aspo.ASPOTrainer):
        def training_step(self, *args, **kwargs):
            out = super().training_step(*args, **kwargs)
            weights.append(dict(self.probe))
            return out

    train(trl_aspo, tmp_path, trainer_class=ProbedASPOTrainer)
    assert len(weights) == 2
    # every probe ratio reached, for both signs of A, on some completion not yet ended by EOS
    for sign in (1.0, -1.0):
        reached = sum((p["mask"][p["signs"] == sign] > 0).any(0).float() for p in weights)
        assert (reached > 0).all(), (sign, reached)
    for probe in weights:
        grad, ratios, signs, mask = probe["grad"], probe["ratios"], probe["signs"], probe["mask"]
        # w_t = grad_t / (-A_t), in units of the row's first token (r = 1, w = 1): TRL's normalizer cancels
        per_a = grad / -signs[:, None]
        measured = per_a / per_a[:, :1]
        # ASPO's table, by autograd of nano_aspo's own ASPO on the same ratios, in the same units
        logp = ratios.log().double().requires_grad_(True)
        loss, _ = na.policy_loss("aspo", logp, torch.zeros_like(logp), signs.double(), mask.double(),
                                 EPS_LOW, EPS_HIGH, CLIP_C)
        (ref,) = torch.autograd.grad(loss, logp)
        ref = ref / -signs[:, None].double()
        want = ref / ref[:, :1]
        valid = mask > 0
        assert valid[:, 1:].any()  # the probes reach beyond the unit token
        torch.testing.assert_close(measured[valid].double(), want[valid], rtol=0, atol=1e-6)
        assert (grad[~valid] == 0).all()  # padding after EOS has no gradient


def first_step_log_ratios(trl_aspo, tmp_path, **overrides):
    """max |log r| TRL passes to the weight on each of two steps."""
    seen = []

    class Recorder(trl_aspo.ASPOTrainer):
        def get_gamma_weights(self, advantages, log_ratio_per_token, mask, *args, **kwargs):
            seen.append(log_ratio_per_token[mask > 0].abs().max().item())
            return super().get_gamma_weights(advantages, log_ratio_per_token, mask, *args, **kwargs)

    train(trl_aspo, tmp_path, trainer_class=Recorder, **overrides)
    return seen


@pytest.mark.parametrize("num_iterations", [1, 2])
def test_num_iterations_above_1_gives_aspo_a_ratio_in_trls_grpo(trl_aspo, tmp_path, num_iterations):
    # one optimizer step per generation (steps_per_generation=1): the second step reuses the first's
    # samples only when num_iterations > 1, and only then does the weight see r != 1 (the sampler
    # anchor at lag 0, ASPO.md §12); with num_iterations=1 every r is 1 and ASPO equals GRPO
    seen = first_step_log_ratios(trl_aspo, tmp_path, steps_per_generation=1,
                                 num_iterations=num_iterations)
    assert seen[0] == 0
    assert (seen[1] > 1e-3) if num_iterations > 1 else (seen[1] == 0)


# one stale completion per sign of A: r = pi_theta / pi_sampler, the sampler some updates behind,
# at one point of each range of ASPO.md §5, and ASPO's weight there (w = 1/r flipped, c, 0, r)
STALE_R = [0.25, 0.5, 0.9, 1.1, 1.6, 4.0]
STALE_W = {1.0: [3.0, 2.0, 1 / 0.9, 1 / 1.1, 0.0, 0.0], -1.0: [0.0, 0.0, 0.9, 1.1, 1.6, 3.0]}


def test_the_weight_function_on_stale_ratios_is_aspos_table(trl_aspo, tmp_path):
    # TRL's asynchronous GRPO produces such ratios (tests/test_trl_async_aspo.py runs ASPO there);
    # here, the weight ASPOTrainer hands GRPOTrainer's loss on them
    trainer = build(trl_aspo, tmp_path)
    trainer.model.train()
    log_r = torch.tensor(STALE_R).log().expand(2, -1)
    adv, mask = torch.tensor([1.0, -1.0]), torch.ones(2, len(STALE_R))
    w = trainer.get_gamma_weights(adv[:, None].expand_as(log_r), log_r, mask, None)
    torch.testing.assert_close(w, torch.tensor([STALE_W[1.0], STALE_W[-1.0]]))
    # TRL's vLLM correction (sampler vs trainer engines) multiplies the weight, once
    is_ratio = torch.full_like(log_r, 0.5)
    w_is = trainer.get_gamma_weights(adv[:, None].expand_as(log_r), log_r, mask, is_ratio)
    torch.testing.assert_close(w_is, 0.5 * w)
    # clip fractions of the 12 tokens: A < 0 below 0.8 (2), A > 0 above 1.28 (2), dual-clip (2)
    logged = {k: v[0] for k, v in trainer._metrics["train"].items() if k.startswith("clip_ratio/")}
    assert logged == pytest.approx({"clip_ratio/low_mean": 1 / 6, "clip_ratio/high_mean": 1 / 6,
                                    "clip_ratio/region_mean": 1 / 3, "clip_ratio/dual_mean": 1 / 6})


def test_the_weight_function_equals_nano_aspos_gradient_on_random_stale_ratios(trl_aspo, tmp_path):
    trainer = build(trl_aspo, tmp_path)
    gen = torch.Generator().manual_seed(0)
    log_r = (1.5 * torch.randn(8, 6, generator=gen, dtype=torch.float64)).requires_grad_(True)
    adv = torch.tensor([1.0, -1.0, 0.5, -2.0] * 2, dtype=torch.float64)
    mask = torch.ones_like(log_r)
    w = trainer.get_gamma_weights(adv[:, None].expand_as(log_r), log_r.detach(), mask, None)
    loss, _ = na.policy_loss("aspo", log_r, torch.zeros_like(log_r), adv, mask,
                             EPS_LOW, EPS_HIGH, CLIP_C)
    (grad,) = torch.autograd.grad(loss, log_r)
    # nano_aspo's token-mean gradient is -A w / N (ASPO.md §3)
    torch.testing.assert_close(w, grad * -mask.sum() / adv[:, None], rtol=1e-12, atol=1e-12)


def test_dropout_is_off_by_default_so_the_first_ratio_is_1(trl_aspo, tmp_path):
    # GPT-2's dropout 0.1 stays in its config; ASPOConfig's disable_dropout=True removes it from the model, so
    # the old log-probs (computed at rollout) and the first update's agree up to rounding
    assert first_step_log_ratios(trl_aspo, tmp_path)[0] < 1e-6
    assert first_step_log_ratios(trl_aspo, tmp_path, disable_dropout=False)[0] > 1e-3  # why it is the default


def test_bad_settings_are_one_line_errors(trl_aspo, tmp_path):
    from trl import GRPOConfig
    with pytest.raises(ValueError, match=r"^ASPOConfig uses loss_type='vespo' .*got 'dapo'$"):
        trl_aspo.ASPOConfig(output_dir=str(tmp_path), loss_type="dapo")
    with pytest.raises(ValueError, match=r"^aspo_clip_c must be > 1 \(got 1.0\)$"):
        trl_aspo.ASPOConfig(output_dir=str(tmp_path), aspo_clip_c=1.0)
    with pytest.raises(ValueError, match="importance_sampling_level must be 'token'"):
        trl_aspo.ASPOConfig(output_dir=str(tmp_path), importance_sampling_level="sequence")
    model, tokenizer = tiny_gpt2_and_tokenizer()
    with pytest.raises(TypeError, match=r"^ASPOTrainer needs args=ASPOConfig\(\.\.\.\), got GRPOConfig$"):
        trl_aspo.ASPOTrainer(model=model, reward_funcs=count_a, args=GRPOConfig(output_dir=str(tmp_path), use_cpu=True),
                             processing_class=tokenizer)


@pytest.mark.parametrize("version", ["1.15.2", "1.17.0", "2.0.0"])
def test_an_unsupported_trl_is_a_one_line_error_naming_both_versions(trl_aspo, monkeypatch, version):
    import trl
    monkeypatch.setattr(trl, "__version__", version)
    monkeypatch.syspath_prepend(str(ROOT / "integrations"))
    monkeypatch.delitem(sys.modules, "trl_aspo")
    with pytest.raises(ImportError) as e:
        importlib.import_module("trl_aspo")
    assert str(e.value) == f"trl_aspo supports TRL 1.16.x (tested with 1.16.0); installed: TRL {version}"
