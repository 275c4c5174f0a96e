"""integrations/trl_async_aspo.py inside TRL's AsyncGRPOTrainer (trl.experimental.async_grpo), the
release integrations/requirements.txt pins, on CPU as far as the class builds without a vLLM
server: built through its own constructor, fed by its own packing (TreeRow) and collator, its own
compute_loss run on stale ratios, where the gradient on every loss position must equal nano-aspo's
ASPO; two optimizer steps through its own training loop. Stand-ins, each for a piece that needs a
GPU or a server (the README says what they leave unrun): the rollout worker and the weight transfer
(TRL's own injection points, for tests), FlashAttention-3 and the GPU's name (see on_cpu).
Skipped without TRL (the reason shows in the summary); under CI a missing TRL fails
(conftest.require)."""
import importlib
import math
import queue
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import nano_aspo as na
from conftest import ROOT
from test_trl_aspo import char_tokenizer, integration

EPS_LOW, EPS_HIGH, CLIP_C = 0.2, 0.28, 3.0
# one ratio in each range of ASPO's weight table (ASPO.md §5), between 1/c, 1-eps_low, 1,
# 1+eps_high and c
PROBE_R = [0.25, 0.5, 0.9, 1.1, 1.6, 4.0]
PROMPT = [2, 3, 4]  # "abc" in char_tokenizer's ids
# a group of four completions: the first two share their first token after the prompt, so TRL's
# packing serves both from one position (two loss terms of different ratio and sign there)
COMPLETIONS = [[2, 2, 5, 6, 7, 1], [2, 3, 3, 1], [6, 7, 2, 2, 8, 1], [5, 9, 9, 1]]
ADVANTAGES = [1.5, -0.5, 2.0, -1.0]


@pytest.fixture(scope="module")
def async_aspo():
    return integration("trl_async_aspo", "running ASPO inside TRL's AsyncGRPOTrainer")


def varlen_attention(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                     softmax_scale=None, causal=True, window_size=(-1, -1), **kwargs):
    """flash_attn_varlen_func's result in plain torch: segment s of the queries attends to segment
    s of the keys, causally, the last query aligned with the last key (FlashAttention's
    convention)."""
    assert causal and window_size == (-1, -1)
    out = torch.empty_like(q)
    for s in range(len(cu_seqlens_q) - 1):
        qs = q[cu_seqlens_q[s]:cu_seqlens_q[s + 1]]
        ks, vs = (x[cu_seqlens_k[s]:cu_seqlens_k[s + 1]] for x in (k, v))
        scores = torch.einsum("qhd,khd->hqk", qs, ks) * (softmax_scale or qs.shape[-1] ** -0.5)
        seen = torch.arange(len(ks))[None, :] <= torch.arange(len(qs))[:, None] + len(ks) - len(qs)
        out[cu_seqlens_q[s]:cu_seqlens_q[s + 1]] = torch.einsum(
            "hqk,khd->qhd", scores.masked_fill(~seen, float("-inf")).softmax(-1), vs)
    return out


@pytest.fixture
def on_cpu(async_aspo, monkeypatch):
    from trl.experimental.async_grpo import async_grpo_trainer, packing
    # TRL's tree attention calls FlashAttention-3, a CUDA kernel it fetches from the Hub
    monkeypatch.setattr(packing, "_flash_attn",
                        lambda: SimpleNamespace(flash_attn_varlen_func=varlen_attention))
    # its constructor reads the GPU's name for the MFU metric (None: that metric is skipped)
    monkeypatch.setattr(async_grpo_trainer, "get_peak_flops_per_device", lambda *args: None)


class QueuedRollouts:
    """Stands in for AsyncRolloutWorker, which generates through a vLLM server: the samples given,
    already in its queue."""

    def __init__(self, samples):
        self.rollout_buffer, self.metrics_queue = queue.Queue(), queue.Queue()
        for sample in samples:
            self.rollout_buffer.put(sample)

    def start(self):
        pass

    def stop(self):
        pass

    def update_model_version(self, version):
        pass

    def check_health(self, stale_after_s):
        # TRL calls it while the queue stays empty: fail instead of waiting for rollouts forever
        raise RuntimeError("the stand-in rollout worker has no samples left")


class NoServer:
    """Stands in for the weight transfer to the vLLM server."""

    def init_weight_transfer(self):
        pass

    def pause(self):
        pass

    def send_weights(self, named_tensors):
        for _ in named_tensors:
            pass

    def resume(self):
        pass

    def destroy(self):
        pass


def tiny_llama():
    """A 1-layer Llama over char_tokenizer's 10 ids (tree attention needs Linear projections, which
    GPT-2's Conv1D lacks)."""
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=10, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32,
        bos_token_id=1, eos_token_id=1, pad_token_id=0))


def stale_rollouts(model):
    """TRL's RolloutSample for each completion, its old log-probs those of weights that sampled it
    some syncs ago: the current ones divided by PROBE_R, token after token (r runs through every
    range of §5 for both signs of A)."""
    from trl.experimental.async_grpo.async_rollout_worker import RolloutSample
    samples = []
    for i, (completion, advantage) in enumerate(zip(COMPLETIONS, ADVANTAGES)):
        ids = PROMPT + completion
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0, :-1]
        current = logits.log_softmax(-1).gather(1, torch.tensor(ids[1:])[:, None])[:, 0]
        r = torch.tensor((PROBE_R * 2)[i:i + len(ids) - 1])
        old = np.concatenate([[0.0], (current - r.log()).numpy()])
        old[:len(PROMPT)] = 0.0  # prompt positions carry no log-prob, as TRL's worker fills them
        samples.append(RolloutSample(
            prompt=[], completion=[], input_ids=np.array(ids),
            completion_mask=np.array([0] * len(PROMPT) + [1] * len(completion)),
            old_log_probs=old.astype(np.float32), advantage=advantage, model_version=0,
            group_id=0, metrics={}))
    return samples


def build(async_aspo, tmp_path, trainer_class=None, samples=(), **overrides):
    """ASPOAsyncGRPOTrainer (or TRL's AsyncGRPOTrainer) on the tiny Llama, fed by samples."""
    from datasets import Dataset
    from trl.experimental.async_grpo import AsyncGRPOConfig

    tiny_llama().save_pretrained(tmp_path / "llama")
    trainer_class = trainer_class or async_aspo.ASPOAsyncGRPOTrainer
    config_class = AsyncGRPOConfig
    if trainer_class is async_aspo.ASPOAsyncGRPOTrainer:
        config_class, overrides = async_aspo.ASPOAsyncGRPOConfig, {"aspo_clip_c": CLIP_C,
                                                                  **overrides}
    args = config_class(output_dir=str(tmp_path / "out"), use_cpu=True, bf16=False, seed=0,
                        report_to="none", save_strategy="no", gradient_checkpointing=False,
                        epsilon=EPS_LOW, epsilon_high=EPS_HIGH, token_budget=0,
                        per_device_train_batch_size=len(COMPLETIONS), learning_rate=1e-2,
                        **overrides)
    return trainer_class(model=str(tmp_path / "llama"), reward_funcs=[], args=args,
                         train_dataset=Dataset.from_dict({"prompt": ["abc"]}),
                         processing_class=char_tokenizer(), rollout_worker=QueuedRollouts(samples),
                         weight_transfer=NoServer())


def collate(samples):
    """One micro-batch as TRL's FixedCountBatcher and DataCollatorForRollout make it, for one
    process."""
    from trl.experimental.async_grpo.async_grpo_trainer import DataCollatorForRollout
    from trl.experimental.async_grpo.packing import TreeRow
    row = TreeRow()
    for sample in samples:
        row.add({"input_ids": sample.input_ids, "completion_mask": sample.completion_mask,
                 "old_log_probs": sample.old_log_probs, "advantage": sample.advantage,
                 "group_id": sample.group_id, "metrics": sample.metrics})
    return DataCollatorForRollout(pad_token_id=0)([[row]])


def loss_on_positions(trainer, inputs):
    """(loss, its gradient with respect to the model's log-prob at each packed position, those
    log-probs) from the trainer's compute_loss."""
    kept = {}

    def model(*args, **kwargs):
        outputs = trainer.model(*args, **kwargs)
        outputs.log_probs.retain_grad()
        kept["log_probs"] = outputs.log_probs
        return outputs

    trainer.current_gradient_accumulation_steps = 1  # set by TRL's training loop
    loss = trainer.compute_loss(model, inputs)
    loss.backward()
    return loss.item(), kept["log_probs"].grad.flatten(), kept["log_probs"].detach().flatten()


def core_gradient_on_positions(inputs, log_probs, method):
    """nano-aspo's policy_loss(method) on the same loss terms (each completion a row), its gradient
    summed onto the packed positions the terms share, as TRL's per-token log-probs receive it."""
    selected = inputs["token_index"] >= 0
    position, segment = inputs["token_index"][selected], inputs["segment_id"][selected]
    old, advantages = inputs["old_log_probs"][selected], inputs["advantages"][selected]
    rows, width = int(segment.max()) + 1, int(torch.bincount(segment).max())
    column = torch.cat([torch.arange(n) for n in torch.bincount(segment)])
    logp = torch.zeros(rows, width, dtype=torch.float64)
    logp[segment, column] = log_probs[position].double()
    logp.requires_grad_(True)
    old_rows = torch.zeros(rows, width, dtype=torch.float64)
    old_rows[segment, column] = old.double()
    mask = torch.zeros(rows, width, dtype=torch.float64)
    mask[segment, column] = 1.0
    row_advantage = torch.zeros(rows, dtype=torch.float64).index_copy(0, segment,
                                                                      advantages.double())
    loss, _ = na.policy_loss(method, logp, old_rows, row_advantage, mask, EPS_LOW, EPS_HIGH, CLIP_C)
    (grad,) = torch.autograd.grad(loss, logp)
    ratio = (logp - old_rows).exp()[segment, column].detach()
    out = torch.zeros_like(log_probs, dtype=torch.float64).index_add_(0, position,
                                                                      grad[segment, column])
    return out, ratio, advantages


def test_the_async_trainer_gives_stale_tokens_aspos_weights(async_aspo, on_cpu, tmp_path):
    trainer = build(async_aspo, tmp_path)
    inputs = collate(stale_rollouts(tiny_llama()))
    selected = inputs["token_index"] >= 0
    # some packed positions serve two loss terms
    assert selected.sum() > torch.unique(inputs["token_index"][selected]).numel()
    loss, grad, log_probs = loss_on_positions(trainer, inputs)
    want, ratio, advantages = core_gradient_on_positions(inputs, log_probs, "aspo")
    edges = torch.tensor([1 / CLIP_C, 1 - EPS_LOW, 1, 1 + EPS_HIGH, CLIP_C], dtype=ratio.dtype)
    for side in (advantages > 0, advantages < 0):  # every range of §5, for both signs of A
        assert torch.bucketize(ratio[side], edges).unique().numel() == 6
    torch.testing.assert_close(grad.double(), want, rtol=1e-4, atol=1e-6)

    # TRL's own trainer on the same batch: the same loss value (its PPO-clip), other gradients
    plain = build(async_aspo, tmp_path / "plain", async_aspo.AsyncGRPOTrainer)
    plain_loss, plain_grad, _ = loss_on_positions(plain, inputs)
    assert loss == pytest.approx(plain_loss, rel=1e-6)
    assert (plain_grad.double() - want).abs().max() > 1e-2
    # and ASPO's soft dual-clip share logged beside TRL's clip metrics
    metrics = trainer._metrics["train"]
    dual = ((advantages > 0) & (ratio < 1 / CLIP_C)) | ((advantages < 0) & (ratio > CLIP_C))
    assert metrics["clip_ratio/dual_mean"] == [pytest.approx(dual.double().mean().item())]
    assert "clip_ratio/low_mean" in metrics and "ratio" in metrics


def test_two_steps_of_the_async_trainer_on_cpu(async_aspo, on_cpu, tmp_path):
    samples = stale_rollouts(tiny_llama())
    # three micro-batches queued for two steps: accelerate's dispatcher fetches one batch ahead
    trainer = build(async_aspo, tmp_path, samples=samples * 3, max_steps=2, logging_steps=1)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "clip_ratio/dual_mean" in entry]
    assert len(logged) == 2
    assert all(math.isfinite(entry["loss"]) and 0 <= entry["clip_ratio/dual_mean"] <= 1
               for entry in logged)
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))


def test_bad_settings_are_one_line_errors(async_aspo, on_cpu, tmp_path):
    from trl.experimental.async_grpo import AsyncGRPOConfig
    with pytest.raises(ValueError, match=r"^aspo_clip_c must be > 1 \(got 1\.0\)$"):
        async_aspo.ASPOAsyncGRPOConfig(output_dir=str(tmp_path), aspo_clip_c=1.0)
    with pytest.raises(TypeError, match=r"^ASPOAsyncGRPOTrainer needs args=ASPOAsyncGRPOConfig"
                                        r"\(\.\.\.\), got AsyncGRPOConfig$"):
        async_aspo.ASPOAsyncGRPOTrainer(model="unused", args=AsyncGRPOConfig(
            str(tmp_path), use_cpu=True, bf16=False))


def test_another_trl_release_is_a_one_line_error(async_aspo, monkeypatch):
    import trl
    monkeypatch.setattr(trl, "__version__", "1.17.0")
    monkeypatch.syspath_prepend(str(ROOT / "integrations"))
    for name in ("trl_aspo", "trl_async_aspo"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    with pytest.raises(ImportError, match=r"^trl_aspo supports TRL 1\.16\.x \(tested with "
                                          r"1\.16\.0\); installed: TRL 1\.17\.0$"):
        importlib.import_module("trl_async_aspo")
