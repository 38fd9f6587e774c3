"""LUSPO and VESPO (issue 19) against TRL's own ``GRPOTrainer`` code, and the VESPO kernel's closed form.

Oracle: TRL's ``GRPOTrainer._compute_loss`` (``loss_type='luspo'`` / ``'vespo'``) and its static
``get_gamma_weights``, called directly from the installed ``trl`` (huggingface/trl release v1.16.0,
``trl/trainer/grpo_trainer.py``) on a stand-in trainer whose model returns given per-token log-probs (as
tests/test_integrations_trl_grpo.py does). The vLLM importance-sampling ratios TRL's loss reads are built by a port of
``GRPOTrainer._generate_and_score_completions`` (same file, the ``vllm_importance_sampling_correction`` block).
Agreement asserted: 1e-12 in float64, values and gradients (VESPO's value: the stated relation).
"""

import math
import os
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

import losskit
from losskit.preference import vespo_weights

for _k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ[_k] = "1"

TOL = dict(rtol=1e-12, atol=1e-12)


def batch(seed, b=6, t=7, spread=0.3, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    mask = (torch.arange(t) < lengths[:, None]).long()
    logps = -torch.rand(b, t, generator=g, dtype=torch.float64) * 2 * scale
    old = (logps + spread * scale * torch.randn(b, t, generator=g, dtype=torch.float64)).clamp(max=0)
    ref = (logps + 0.2 * torch.randn(b, t, generator=g, dtype=torch.float64)).clamp(max=0)
    sampler = (old + 0.2 * torch.randn(b, t, generator=g, dtype=torch.float64)).clamp(max=0)
    adv = torch.randn(b, generator=g, dtype=torch.float64)
    adv[0] = 0.0  # A = 0 takes VESPO's A >= 0 branch
    inputs = {"prompt_ids": torch.zeros(b, 3, dtype=torch.long), "prompt_mask": torch.ones(b, 3, dtype=torch.long),
              "completion_ids": torch.zeros(b, t, dtype=torch.long), "completion_mask": mask,
              "advantages": adv, "old_per_token_logps": old, "ref_per_token_logps": ref,
              "num_items_in_batch": mask.sum() * 1.0}
    return inputs, logps, sampler


def trl_is_ratio(old, sampler, mask, mode, lo, hi):
    # huggingface/trl v1.16.0 trl/trainer/grpo_trainer.py, GRPOTrainer._generate_and_score_completions,
    # the vllm_importance_sampling_correction block (token modes)
    per_token_logps_diff = (old - sampler) * mask
    per_token_logps_diff = torch.nan_to_num(per_token_logps_diff, nan=0.0)
    ratio = torch.exp(per_token_logps_diff)
    if mode == "token_truncate":
        return torch.clamp(ratio, min=lo, max=hi)
    min_val = lo if lo is not None else -math.inf
    max_val = hi if hi is not None else math.inf
    return ratio.masked_fill((ratio < min_val) | (ratio > max_val), value=0.0)


def stand_in(trl, loss_type, logps, *, importance, beta=0.0, epsilon=0.2, epsilon_high=0.2, vllm=False,
             vespo=(2.0, 3.0, 3.0, 2.0)):
    logps = logps.clone().requires_grad_(True)
    acc = SimpleNamespace(num_processes=1, gather=lambda x: x, gather_for_metrics=lambda x: x,
                          reduce=lambda x, reduction="sum": x, sync_gradients=True)
    k_pos, lam_pos, k_neg, lam_neg = vespo
    self = SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *a, **k: (logps, torch.zeros_like(logps), None),
        get_gamma_weights=trl.GRPOTrainer.get_gamma_weights,
        top_entropy_quantile=1.0, off_policy_mask_threshold=None, importance_sampling_level=importance, beta=beta,
        args=SimpleNamespace(use_bias_correction_kl=False, delta=None, steps_per_generation=1, vespo_k_pos=k_pos,
                             vespo_lambda_pos=lam_pos, vespo_k_neg=k_neg, vespo_lambda_neg=lam_neg),
        loss_type=loss_type, epsilon_low=epsilon, epsilon_high=epsilon_high,
        use_vllm=vllm, vllm_importance_sampling_correction=vllm, model=SimpleNamespace(training=True),
        current_gradient_accumulation_steps=1, max_completion_length=9, accelerator=acc,
        _entropy_bonus_enabled=False, aux_loss_enabled=False,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)})
    return self, logps


def trl_loss(trl, loss_type, inputs, logps, **kw):
    self, x = stand_in(trl, loss_type, logps, **kw)
    loss = trl.GRPOTrainer._compute_loss(self, None, inputs)
    (g,) = torch.autograd.grad(loss, x)
    return loss.detach(), g


def ours(fn, inputs, logps, **kw):
    x = logps.clone().requires_grad_(True)
    out, metrics = fn(x, inputs["old_per_token_logps"], inputs["advantages"], inputs["completion_mask"],
                      inputs["ref_per_token_logps"], return_metrics=True, **kw)
    (g,) = torch.autograd.grad(out, x)
    return out.detach(), g, metrics


@pytest.fixture(scope="module")
def trl():
    pytest.importorskip("transformers", reason="needs the hf extra: pip install 'losskit[hf]'")
    return pytest.importorskip("trl", reason="needs the hf extra: pip install 'losskit[hf]'")


# ------------------------------------------------------------------------------------------------- LUSPO
@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize("eps", [(3e-4, 4e-4), (0.2, 0.28)])
@pytest.mark.parametrize("spread", [0.01, 0.3])
def test_luspo_matches_trl(trl, beta, eps, spread):
    for seed in range(3):
        inputs, logps, _ = batch(seed, spread=spread)
        ref_v, ref_g = trl_loss(trl, "luspo", inputs, logps, importance="sequence", beta=beta, epsilon=eps[0],
                                epsilon_high=eps[1])
        v, g, _ = ours(losskit.luspo, inputs, logps, beta=beta, epsilon=eps[0], epsilon_high=eps[1])
        torch.testing.assert_close(v, ref_v, **TOL)
        torch.testing.assert_close(g, ref_g, **TOL)


def test_luspo_is_gspo_weighted_by_length():
    """LUSPO's per-sequence term is GSPO's times the sequence's length (the paper's correction)."""
    inputs, logps, _ = batch(4)
    args = (logps, inputs["old_per_token_logps"], inputs["advantages"], inputs["completion_mask"])
    lengths = inputs["completion_mask"].sum(-1).double()
    torch.testing.assert_close(losskit.luspo(*args, reduction="none"),
                               losskit.gspo(*args, reduction="none") * lengths, **TOL)
    # grpo(aggregation='luspo', importance='sequence') is the same computation
    torch.testing.assert_close(losskit.luspo(*args), losskit.grpo(*args, importance="sequence", epsilon=3e-4,
                                                                   epsilon_high=4e-4, aggregation="luspo"), **TOL)


# ------------------------------------------------------------------------------------------------- VESPO
@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize("spread", [0.05, 0.3, 5.0])  # 5.0: sequence log-ratios beyond the +-20 clamps
@pytest.mark.parametrize("kernel", [(2.0, 3.0, 3.0, 2.0), (1.0, 0.5, 4.0, 7.0)])
def test_vespo_matches_trl(trl, beta, spread, kernel):
    names = ("vespo_k_pos", "vespo_lambda_pos", "vespo_k_neg", "vespo_lambda_neg")
    for seed in range(3):
        inputs, logps, _ = batch(seed, spread=spread)
        ref_v, ref_g = trl_loss(trl, "vespo", inputs, logps, importance="token", beta=beta, vespo=kernel)
        n = inputs["num_items_in_batch"]
        v, g, m = ours(losskit.vespo, inputs, logps, beta=beta, num_items_in_batch=n, **dict(zip(names, kernel)))
        torch.testing.assert_close(g, ref_g, **TOL)
        # values: TRL's token value is -phi A log pi (+ beta k3), losskit's -phi A (+ beta k3)
        mask = inputs["completion_mask"].bool()
        phi = vespo_weights(logps - inputs["old_per_token_logps"], mask, inputs["advantages"],
                            k_pos=kernel[0], lambda_pos=kernel[1], k_neg=kernel[2], lambda_neg=kernel[3])
        policy_tok = torch.where(mask, -phi * inputs["advantages"][:, None], 0.0)
        torch.testing.assert_close(v + (policy_tok * (logps - 1)).sum() / n, ref_v, **TOL)


@pytest.mark.parametrize("mode,lo,hi", [("token_truncate", None, 3.0), ("token_truncate", 0.5, 1.5),
                                        ("token_mask", 0.8, 1.25)])
def test_vespo_sampling_correction_matches_trl(trl, mode, lo, hi):
    for seed in range(3):
        inputs, logps, sampler = batch(seed)
        mask = inputs["completion_mask"]
        inputs = {**inputs, "importance_sampling_ratio": trl_is_ratio(inputs["old_per_token_logps"], sampler, mask,
                                                                      mode, lo, hi)}
        _, ref_g = trl_loss(trl, "vespo", inputs, logps, importance="token", vllm=True)
        _, g, _ = ours(losskit.vespo, inputs, logps, sampling_logps=sampler, sampling_correction=mode,
                       sampling_clip_min=lo, sampling_clip_max=hi, num_items_in_batch=inputs["num_items_in_batch"])
        torch.testing.assert_close(g, ref_g, **TOL)


def test_vespo_weights_match_trl_gamma_weights(trl):
    g = torch.Generator().manual_seed(7)
    lr = 3 * torch.randn(8, 5, generator=g, dtype=torch.float64)
    lr[0, 0] = 60.0  # beyond the per-token clamp
    mask = torch.rand(8, 5, generator=g) < 0.7
    adv = torch.randn(8, 1, generator=g, dtype=torch.float64)
    ref = trl.GRPOTrainer.get_gamma_weights(adv, lr, mask.double(), None)
    torch.testing.assert_close(vespo_weights(lr, mask, adv), ref, **TOL)


@pytest.mark.parametrize("k,lam", [(2.0, 3.0), (3.0, 2.0), (0.5, 0.25)])
def test_vespo_kernel_closed_form(k, lam):
    """phi(w) = e^lam w^k e^(-lam w): phi(1) = 1, its maximum at w = k / lam, phi -> 0 at 0 and at infinity."""
    def phi(log_w):
        lw = torch.tensor([[log_w]], dtype=torch.float64)
        return vespo_weights(lw, torch.ones(1, 1, dtype=torch.bool), torch.ones(1), k_pos=k, lambda_pos=lam).item()

    assert phi(0.0) == pytest.approx(1.0, abs=1e-15)
    w_star = k / lam
    assert phi(math.log(w_star)) == pytest.approx(math.exp(lam + k * math.log(w_star) - lam * w_star), rel=1e-13)
    assert phi(math.log(w_star)) >= max(phi(math.log(w_star) + d) for d in (-0.1, -0.01, 0.01, 0.1))
    for log_w in (-15.0, -3.0, 2.0, 5.0):  # the closed form away from w = 1, both tails
        assert phi(log_w) == pytest.approx(math.exp(lam + k * log_w - lam * math.exp(log_w)), rel=1e-12, abs=1e-300)
    assert phi(-15.0) < phi(-3.0) < 1 and phi(5.0) < phi(2.0) < 1


def test_vespo_gradient_is_phi_weighted_policy_gradient():
    """d loss / d log pi_t = -phi_i A_i / N on masked tokens (dapo), 0 elsewhere."""
    inputs, logps, _ = batch(2)
    mask = inputs["completion_mask"].bool()
    _, grad, _ = ours(losskit.vespo, inputs, logps, beta=0.0)
    phi = vespo_weights(logps - inputs["old_per_token_logps"], mask, inputs["advantages"])
    expected = torch.where(mask, -phi * inputs["advantages"][:, None], 0.0) / mask.sum()
    torch.testing.assert_close(grad, expected, **TOL)


def test_vespo_refuses_what_it_cannot_mean():
    inputs, logps, sampler = batch(0)
    args = (logps, inputs["old_per_token_logps"], inputs["advantages"], inputs["completion_mask"])
    # importance does not apply: w is always the product of the token ratios
    torch.testing.assert_close(losskit.vespo(*args, importance="sequence"), losskit.vespo(*args), **TOL)
    with pytest.raises(losskit.LossInputError, match="sampling_correction"):
        losskit.vespo(*args, sampling_logps=sampler, sampling_correction="sequence_mask")
    with pytest.raises(losskit.LossInputError, match="vespo_lambda_pos"):
        losskit.vespo(*args, vespo_lambda_pos=0.0)


def test_grpo_clip_vespo_is_vespo():
    inputs, logps, _ = batch(3)
    args = (logps, inputs["old_per_token_logps"], inputs["advantages"], inputs["completion_mask"])
    torch.testing.assert_close(losskit.grpo(*args, clip="vespo", vespo_k_neg=1.5),
                               losskit.vespo(*args, vespo_k_neg=1.5), **TOL)


# ------------------------------------------------------------------------- LosskitGRPOTrainer (integration)
@pytest.mark.parametrize("loss_type,importance", [("luspo", "sequence"), ("vespo", "token")])
def test_losskit_grpo_trainer_luspo_vespo(trl, loss_type, importance):
    """The integration's path (LosskitGRPOTrainer._compute_loss) with loss_type luspo / vespo, gradient accumulation
    2 and steps_per_generation 4, against TRL's own _compute_loss: values (luspo) and gradients equal."""
    from losskit.integrations.trl import LosskitGRPOTrainer

    for seed in range(3):
        inputs, logps, _ = batch(seed)
        inputs = {**inputs, "num_items_in_batch": inputs["num_items_in_batch"] * 3.0}
        pair = []
        for _ in range(2):
            self, x = stand_in(trl, loss_type, logps, importance=importance, beta=0.04, epsilon=3e-4,
                               epsilon_high=4e-4)
            self.current_gradient_accumulation_steps, self.args.steps_per_generation = 2, 4
            pair.append((self, x))
        (s_trl, x_trl), (s_lk, x_lk) = pair
        s_lk.losskit_clip = "vespo" if loss_type == "vespo" else "ppo"
        s_lk.losskit_aggregation = "dapo" if loss_type == "vespo" else "luspo"
        s_lk.losskit_kl_estimator, s_lk.losskit_dual_clip = "k3", None
        ref = trl.GRPOTrainer._compute_loss(s_trl, None, inputs)
        got = LosskitGRPOTrainer._compute_loss(s_lk, None, inputs)
        if loss_type == "luspo":
            torch.testing.assert_close(got, ref, **TOL)
        (g_ref,), (g,) = torch.autograd.grad(ref, x_trl), torch.autograd.grad(got, x_lk)
        torch.testing.assert_close(g, g_ref, **TOL)
