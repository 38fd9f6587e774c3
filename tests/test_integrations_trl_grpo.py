"""losskit.integrations.trl.LosskitGRPOTrainer: losskit.grpo's aggregations inside TRL's GRPOTrainer.

Agreement: TRL's own ``GRPOTrainer._compute_loss`` and ``LosskitGRPOTrainer._compute_loss`` on a stand-in trainer
whose model returns given per-token log-probs (off-policy old log-probs, so that clipping is active, a reference for
the KL term, gradient accumulation), for every loss type losskit covers; then a short real run with generation.
"""

import os
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

for _k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ[_k] = "1"
pytest.importorskip("transformers", reason="needs the hf extra: pip install 'losskit[hf]'")
trl = pytest.importorskip("trl", reason="needs the hf extra: pip install 'losskit[hf]'")

from losskit.integrations.trl import LosskitGRPOTrainer  # noqa: E402

LOSS_TYPES = ["grpo", "bnpo", "dr_grpo", "dapo", "cispo"]


def batch(seed, b=6, t=7):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    mask = (torch.arange(t) < lengths[:, None]).long()
    logps = -torch.rand(b, t, generator=g, dtype=torch.float64) * 2
    old = (logps + 0.3 * torch.randn(b, t, generator=g, dtype=torch.float64)).clamp(max=0)
    ref = (logps + 0.2 * torch.randn(b, t, generator=g, dtype=torch.float64)).clamp(max=0)
    inputs = {"prompt_ids": torch.zeros(b, 3, dtype=torch.long), "prompt_mask": torch.ones(b, 3, dtype=torch.long),
              "completion_ids": torch.zeros(b, t, dtype=torch.long), "completion_mask": mask,
              "advantages": torch.randn(b, generator=g, dtype=torch.float64), "old_per_token_logps": old,
              "ref_per_token_logps": ref, "num_items_in_batch": mask.sum() * 3.0}
    return inputs, logps


def stand_in(loss_type, logps, *, importance="token", beta=0.0, epsilon_high=0.28):
    logps = logps.clone().requires_grad_(True)
    acc = SimpleNamespace(num_processes=1, gather=lambda x: x, gather_for_metrics=lambda x: x,
                          reduce=lambda x, reduction="sum": x, sync_gradients=True)
    self = SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *a, **k: (logps, torch.zeros_like(logps), None),
        top_entropy_quantile=1.0, off_policy_mask_threshold=None, importance_sampling_level=importance, beta=beta,
        args=SimpleNamespace(use_bias_correction_kl=False, delta=None, steps_per_generation=4),
        loss_type=loss_type, epsilon_low=0.2, epsilon_high=(1.1 if loss_type == "cispo" else epsilon_high),
        use_vllm=False, vllm_importance_sampling_correction=False, model=SimpleNamespace(training=True),
        current_gradient_accumulation_steps=2, max_completion_length=9, accelerator=acc,
        _entropy_bonus_enabled=False, aux_loss_enabled=False,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        losskit_clip="cispo" if loss_type == "cispo" else "ppo",
        losskit_aggregation="dapo" if loss_type == "cispo" else loss_type, losskit_kl_estimator="k3",
        losskit_dual_clip=None)
    return self, logps


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("importance", ["token", "sequence"])
@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_agrees_with_trl(loss_type, beta, importance):
    if loss_type == "cispo" and importance == "sequence":
        pytest.skip("CISPO is token-level")
    for seed in range(3):
        inputs, logps = batch(seed)
        s_trl, x_trl = stand_in(loss_type, logps, importance=importance, beta=beta)
        s_lk, x_lk = stand_in(loss_type, logps, importance=importance, beta=beta)
        ref = trl.GRPOTrainer._compute_loss(s_trl, None, inputs)
        ours = LosskitGRPOTrainer._compute_loss(s_lk, None, inputs)
        if loss_type != "cispo":  # CISPO: same gradient, different value (test_cispo_conventions)
            assert abs(ref.item() - ours.item()) < 1e-9, (loss_type, seed)
        (g_ref,), (g,) = torch.autograd.grad(ref, x_trl), torch.autograd.grad(ours, x_lk)
        assert (g_ref - g).abs().max().item() < 1e-9


def test_cispo_conventions():
    """TRL's CISPO caps the ratio at ``epsilon_high`` (an absolute bound, 1.1 in ``stand_in``), losskit's at
    ``1 + epsilon_high`` (the trainer passes ``epsilon_high - 1``). TRL's per-token value is ``-w A log pi``,
    losskit's ``-w A`` (the surrogate's value at the sampled policy): the gradients ``-w A grad log pi`` agree,
    so TRL's value is losskit's with ``log pi`` as the per-token factor."""
    import losskit

    inputs, logps = batch(0)
    mask, adv, old = inputs["completion_mask"], inputs["advantages"], inputs["old_per_token_logps"]
    s_trl, x = stand_in("cispo", logps)
    ref = trl.GRPOTrainer._compute_loss(s_trl, None, inputs)
    (g_ref,) = torch.autograd.grad(ref, x)
    n = inputs["num_items_in_batch"] * 2 / 4
    kw = dict(clip="cispo", aggregation="dapo", num_items_in_batch=n, return_metrics=True)
    for eps_high, same in ((0.1, True), (1.1, False)):
        y = logps.clone().requires_grad_(True)
        loss, m = losskit.grpo(y, old, adv, mask, epsilon_high=eps_high, **kw)
        (g,) = torch.autograd.grad(loss, y)
        assert ((g - g_ref).abs().max().item() < 1e-9) == same
        assert m["clip_fraction"] > 0
        if same:  # the value relation: per-token losskit loss times log pi, aggregated alike
            assert abs((m["per_token_loss"] * logps * mask).sum().item() / n.item() - ref.item()) < 1e-9


def test_grpo_trainer_runs_with_a_losskit_aggregation(tmp_path):
    """A real GRPOTrainer (generation, a reward function, group advantages) on a tiny Llama, 3 steps."""
    datasets = pytest.importorskip("datasets")
    from test_integrations_trl import tiny_setup

    model, tokenizer, _ = tiny_setup()
    prompts = datasets.Dataset.from_dict({"prompt": ["w1 w2 w3", "w4 w5", "w6 w7 w8", "w9"] * 2})

    def reward(completions, **kwargs):
        return [float(c.count("w5")) for c in completions]

    args = trl.GRPOConfig(output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=4, num_generations=4,
                          max_completion_length=6, learning_rate=1e-2, logging_steps=1, report_to=[],
                          save_strategy="no", use_cpu=True, disable_tqdm=True, dataloader_num_workers=0,
                          loss_type="dapo", beta=0.0)
    trainer = LosskitGRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=prompts,
                                 processing_class=tokenizer, aggregation="dr_grpo")
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 3 and all(torch.isfinite(torch.tensor(h["loss"])) for h in logs)
    assert trainer.losskit_aggregation == "dr_grpo"


def test_unsupported_loss_type_is_refused(tmp_path):
    from test_integrations_trl import tiny_setup

    datasets = pytest.importorskip("datasets")
    model, tokenizer, _ = tiny_setup()
    args = trl.GRPOConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True, loss_type="sapo",
                          per_device_train_batch_size=4, num_generations=4)
    with pytest.raises(NotImplementedError, match="sapo"):
        LosskitGRPOTrainer(model=model, reward_funcs=lambda completions, **k: [0.0] * len(completions), args=args,
                           train_dataset=datasets.Dataset.from_dict({"prompt": ["w1"] * 4}),
                           processing_class=tokenizer)
