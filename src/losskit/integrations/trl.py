"""TRL: any registered pairwise preference head of losskit inside TRL's ``DPOTrainer``.

Recipe (``pip install 'losskit[hf]'``)::

    from losskit.integrations.trl import LosskitDPOTrainer
    trainer = LosskitDPOTrainer(model=model, args=trl.DPOConfig(..., beta=0.1), train_dataset=ds,
                                processing_class=tokenizer, head="discopop", head_kwargs={"tau": 0.05})

:class:`LosskitDPOTrainer` subclasses ``trl.DPOTrainer`` (TRL >= 1.16) and overrides one method, the
``Trainer`` hook ``compute_loss``: everything else (datasets, tokenisation, the collator, the reference model
or PEFT adapter, precomputed reference log-probs, TRL's fused LM head that forms no full logits, logging)
is TRL's. The sequence scores are TRL's: the sum of the completion tokens' log-probabilities of the policy
and of the reference, or their mean over the completion (``aggregation='mean'``: the default for heads on
length-normalised scores, IPO, SimPO, ORPO, AlphaPO, as TRL's IPO does). TRL's ``loss_type`` is not used:
the losskit head replaces it. ``beta`` defaults to ``DPOConfig.beta`` for heads that take it.

:class:`LosskitGRPOTrainer` subclasses ``trl.GRPOTrainer`` and computes its surrogate with :func:`losskit.grpo`,
the aggregation explicit (``'grpo'``, ``'bnpo'``, ``'dapo'``, ``'dr_grpo'``): TRL's generation, rewards and
advantages are kept.

Heads with inputs beyond the four sequence scores (EGPO's preference probabilities, MNPO's opponents, APO's
previous iterate, ...) take them from :meth:`LosskitDPOTrainer.head_inputs`, which a subclass overrides;
reference-free heads (SimPO, ORPO, CPO, AlphaPO) skip the reference forward pass. The agreement with TRL's own
loss types is tested (tests/test_integrations_trl.py; the table is in docs/preference.md).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch

from . import require

require("hf", "transformers")
trl = require("hf", "trl")

from .._core import get  # noqa: E402
from ..preference import grpo  # noqa: E402
from ..preference.policy import AGGREGATIONS  # noqa: E402

__all__ = ["LosskitDPOTrainer", "LosskitGRPOTrainer", "PAIRWISE_KINDS", "resolve_head", "sequence_scores_from_batch"]

#: The input kinds of the heads DPOTrainer's batches can feed (a chosen and a rejected sequence score each).
PAIRWISE_KINDS = ("pair scores", "pair mean scores")
_NON_MODEL_KEYS = {"completion_mask", "ref_chosen_logps", "ref_rejected_logps"}
_SCORES = ("policy_chosen_logps", "policy_rejected_logps", "ref_chosen_logps", "ref_rejected_logps")


def resolve_head(head: str | Callable):
    """``(function, aggregation, reference_free, extra_inputs)`` for a registered pairwise head (by name) or a
    callable with the heads' signature (``'sum'`` scores, reference scores given, no extra inputs)."""
    if callable(head):
        return head, "sum", False, ()
    entry = get(head)
    if entry.input_kind.name not in PAIRWISE_KINDS:
        raise ValueError(f"{head!r} is not a pairwise head on sequence scores (its inputs: "
                         f"{entry.input_kind.name!r}); DPOTrainer's batches feed {PAIRWISE_KINDS}")
    inputs = entry.make_example().inputs
    extra = tuple(k for k in inputs if k not in _SCORES)
    aggregation = "mean" if entry.input_kind.name == "pair mean scores" else "sum"
    return entry.fn, aggregation, "ref_chosen_logps" not in inputs, extra


def sequence_scores_from_batch(per_token_logps: torch.Tensor, completion_mask: torch.Tensor,
                               aggregation: str = "sum") -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen, rejected) sequence scores from TRL's per-token log-probs (zero outside the completion, aligned
    with ``completion_mask[:, 1:]``) of a batch of chosen rows then rejected rows: the sum over the completion,
    or ``'mean'``: the sum divided by the completion's token count (``completion_mask.sum(1)``, at least 1, as
    TRL's ``ipo`` and ``sigmoid_norm``)."""
    scores = per_token_logps.sum(dim=1)
    if aggregation == "mean":
        scores = scores / completion_mask.sum(dim=1).clamp(min=1.0)
    elif aggregation != "sum":
        raise ValueError(f"aggregation must be 'sum' or 'mean', not {aggregation!r}")
    return scores.chunk(2, dim=0)


class LosskitDPOTrainer(trl.DPOTrainer):
    """``trl.DPOTrainer`` with a losskit pairwise head as its loss (see the module).

    Args (beyond ``trl.DPOTrainer``'s):
        head: a registered pairwise head's name (``losskit.list(family='preference')``: ``'dpo'``, ``'ipo'``,
            ``'discopop'``, ``'ddo'``, ``'cpl'``, ``'mapl'``, ``'f_dpo'``, ...) or a callable with the heads'
            signature ``(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
            **kwargs) -> loss``.
        head_kwargs: the head's options (``beta`` defaults to ``args.beta`` when the head takes it).
        aggregation: ``'sum'`` or ``'mean'`` sequence scores (default: the head's declared input kind).

    TRL options this trainer cannot honour are refused: ``use_weighting`` (WPO), ``ld_alpha``,
    ``f_divergence_type`` other than ``'reverse_kl'`` (use the ``f_dpo`` head) and several ``loss_type``.
    """

    def __init__(self, *args, head: str | Callable = "dpo", head_kwargs: dict | None = None,
                 aggregation: str | None = None, **kwargs):
        fn, default_aggregation, reference_free, extra = resolve_head(head)
        self.head, self.head_name = fn, head if isinstance(head, str) else getattr(head, "__name__", "head")
        self.head_aggregation = aggregation or default_aggregation
        self.head_reference_free, self.head_extra_inputs = reference_free, extra
        super().__init__(*args, **kwargs)
        for option, bad in (("use_weighting", self.use_weighting), ("ld_alpha", self.ld_alpha is not None),
                            ("f_divergence_type", self.f_divergence_type != "reverse_kl"),
                            ("loss_type", len(self.loss_types) > 1)):
            if bad:
                raise NotImplementedError(f"LosskitDPOTrainer does not support DPOConfig.{option} (the losskit "
                                          "head replaces TRL's loss; f-divergences: head='f_dpo')")
        params = inspect.signature(fn).parameters
        self.head_kwargs = dict(head_kwargs or {})
        if "beta" in params and "beta" not in self.head_kwargs:
            self.head_kwargs["beta"] = self.beta
        self.head_metrics = "return_metrics" in params

    def head_inputs(self, inputs: dict) -> dict:
        """The head's inputs beyond the four sequence scores, from the batch (default: none). Override it for
        heads that need them (e.g. EGPO's ``chosen_preference`` and ``rejected_preference``)."""
        if self.head_extra_inputs:
            raise NotImplementedError(f"head {self.head_name!r} needs {self.head_extra_inputs}: override "
                                      "LosskitDPOTrainer.head_inputs to take them from the batch")
        return {}

    def _policy_and_reference_scores(self, model, inputs):
        completion_mask = inputs["completion_mask"]
        model_kwargs = {k: v for k, v in inputs.items() if k not in _NON_MODEL_KEYS}
        model_kwargs["use_cache"] = False
        if self.aux_loss_enabled:
            model_kwargs["output_router_logits"] = True
        labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
        outputs = model(**model_kwargs, labels=labels, fused_lm_head=True)
        seq_len = completion_mask.size(1) - 1
        chosen, rejected = sequence_scores_from_batch(outputs.log_probs[:, -seq_len:], completion_mask,
                                                      self.head_aggregation)
        if self.head_reference_free:
            return outputs, model_kwargs, (chosen, rejected, None, None)
        if self.precompute_ref_logps:
            ref_chosen, ref_rejected = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        else:
            ref_model = self.ref_model if self.ref_model is not None else self.model
            ref_chosen, ref_rejected = self.compute_ref_log_probs(ref_model, inputs)
        if self.head_aggregation == "mean":
            lengths = completion_mask.sum(dim=1).clamp(min=1.0)
            ref_chosen, ref_rejected = ref_chosen / lengths.chunk(2)[0], ref_rejected / lengths.chunk(2)[1]
        return outputs, model_kwargs, (chosen, rejected, ref_chosen, ref_rejected)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        outputs, model_kwargs, scores = self._policy_and_reference_scores(model, inputs)
        kwargs = {**self.head_kwargs, **self.head_inputs(inputs)}
        if self.head_metrics:
            loss, metrics = self.head(*scores, return_metrics=True, **kwargs)
        else:
            loss, metrics = self.head(*scores, **kwargs), None
        if self.aux_loss_enabled:
            aux = outputs.aux_loss
            loss = loss + self.router_aux_loss_coef * aux
            self._metrics[mode]["aux_loss"].append(self.accelerator.gather_for_metrics(aux).mean().item())
        log = self._metrics[mode]
        if metrics is not None:
            for key, name in (("chosen_rewards", "rewards/chosen"), ("rejected_rewards", "rewards/rejected"),
                              ("accuracies", "rewards/accuracies"), ("margins", "rewards/margins")):
                log[name].append(self.accelerator.gather(metrics[key]).mean().item())
        log["logps/chosen"].append(self.accelerator.gather(scores[0].detach()).mean().item())
        log["logps/rejected"].append(self.accelerator.gather(scores[1].detach()).mean().item())
        if return_outputs:
            with torch.no_grad():
                outputs = model(**model_kwargs)
            return loss, outputs
        return loss


class LosskitGRPOTrainer(trl.GRPOTrainer):
    """``trl.GRPOTrainer`` whose loss is :func:`losskit.grpo` with an explicit aggregation.

    Args (beyond ``trl.GRPOTrainer``'s):
        aggregation: ``'grpo'`` (per-sequence mean, then mean), ``'bnpo'`` (this micro-batch's token mean),
            ``'dapo'`` (the token mean over the whole optimiser step: TRL's ``num_items_in_batch``),
            ``'dr_grpo'`` (``B * max_completion_length``); default: ``GRPOConfig.loss_type`` when it is one of
            these (``'cispo'`` and ``'vespo'``: ``'dapo'`` with CISPO's clip or VESPO's kernel, whose
            ``vespo_k_pos`` ... ``vespo_lambda_neg`` are read from the config; ``'luspo'``: the per-sequence sums).
        kl_estimator: ``'k3'`` (TRL's), ``'k1'`` or ``'k2'``, used when ``beta > 0``.
        dual_clip: dual-clip PPO's ``c > 1`` (losskit's; TRL has none).

    Conventions (tested against TRL's own ``_compute_loss``): the clip range is TRL's ``epsilon`` and
    ``epsilon_high``; CISPO's cap is TRL's ``epsilon_high`` as an absolute ratio bound, losskit's
    ``1 + epsilon_high``, converted here, and CISPO's logged value differs (TRL's per-token ``-w A log pi``,
    losskit's ``-w A``; the gradients are equal); the loss is scaled for gradient accumulation as TRL scales it. TRL
    options with no losskit counterpart are refused: the ``sapo`` loss type (use ``losskit.sapo`` directly), two-sided
    clipping (``delta``), entropy masks and bonuses, off-policy masks, vLLM importance-sampling correction,
    the KL bias correction.
    """

    def __init__(self, *args, aggregation: str | None = None, kl_estimator: str = "k3",
                 dual_clip: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        a = self.args
        self.losskit_clip = self.loss_type if self.loss_type in ("cispo", "vespo") else "ppo"
        default = "dapo" if self.loss_type in ("cispo", "vespo") else self.loss_type
        self.losskit_aggregation = aggregation or default
        if self.losskit_aggregation not in AGGREGATIONS:
            raise NotImplementedError(f"GRPOConfig.loss_type={self.loss_type!r} has no losskit aggregation; pass "
                                      f"aggregation= one of {AGGREGATIONS}")
        if self.loss_type not in (*AGGREGATIONS, "cispo", "vespo"):
            raise NotImplementedError(f"GRPOConfig.loss_type={self.loss_type!r} is not losskit.grpo's surrogate")
        for option, bad in (("delta", a.delta is not None), ("top_entropy_quantile", self.top_entropy_quantile < 1),
                            ("off_policy_mask_threshold", self.off_policy_mask_threshold is not None),
                            ("entropy_coef", self._entropy_bonus_enabled),
                            ("vllm_importance_sampling_correction",
                             self.use_vllm and self.vllm_importance_sampling_correction),
                            ("use_bias_correction_kl", self.beta != 0.0 and a.use_bias_correction_kl)):
            if bad:
                raise NotImplementedError(f"LosskitGRPOTrainer does not support GRPOConfig.{option}")
        self.losskit_kl_estimator, self.losskit_dual_clip = kl_estimator, dual_clip

    def _compute_loss(self, model, inputs):
        prompt_ids, prompt_mask = inputs["prompt_ids"], inputs["prompt_mask"]
        completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
        input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
        attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)
        mask = completion_mask if "tool_mask" not in inputs else completion_mask * inputs["tool_mask"]
        logps, entropies, aux_loss = self._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, completion_ids.size(1), compute_entropy=True,
            compute_aux_loss=self.aux_loss_enabled)
        old = inputs.get("old_per_token_logps")
        old = logps.detach() if old is None else old
        ref = inputs["ref_per_token_logps"] if self.beta != 0.0 else None
        mode = "train" if self.model.training else "eval"
        accumulation = self.current_gradient_accumulation_steps if mode == "train" else 1.0
        num_items, world = None, 1
        if self.losskit_aggregation == "dapo":
            # TRL's num_items_in_batch counts the generation batch (steps_per_generation micro-batches)
            num_items = inputs["num_items_in_batch"].clamp(min=1.0)
            if mode == "train":
                num_items = num_items * self.current_gradient_accumulation_steps / self.args.steps_per_generation
            world = self.accelerator.num_processes
        epsilon_high = self.epsilon_high - 1 if self.losskit_clip == "cispo" else self.epsilon_high
        vespo = {} if self.losskit_clip != "vespo" else {  # VESPO's kernel (GRPOConfig.vespo_*)
            "vespo_k_pos": self.args.vespo_k_pos, "vespo_lambda_pos": self.args.vespo_lambda_pos,
            "vespo_k_neg": self.args.vespo_k_neg, "vespo_lambda_neg": self.args.vespo_lambda_neg}
        loss, metrics = grpo(logps, old, inputs["advantages"], mask, ref, beta=self.beta, epsilon=self.epsilon_low,
                             epsilon_high=epsilon_high, dual_clip=self.losskit_dual_clip,
                             importance=self.importance_sampling_level, clip=self.losskit_clip,
                             kl_estimator=self.losskit_kl_estimator, aggregation=self.losskit_aggregation,
                             max_completion_length=self.max_completion_length, num_items_in_batch=num_items,
                             world_size=world, return_metrics=True, **vespo)
        if self.losskit_aggregation != "dapo":
            loss = loss / accumulation
        if self.aux_loss_enabled:
            loss = loss + self.router_aux_loss_coef * aux_loss / accumulation
        log = self._metrics[mode]
        total = self.accelerator.reduce(torch.stack([(entropies * mask).sum(), mask.sum().float()]), reduction="sum")
        log["entropy"].append((total[0] / total[1].clamp(min=1.0)).item())
        for key in ("clip_fraction", "ratio_mean", "kl_mean"):
            if metrics.get(key) is not None:
                log[f"losskit/{key}"].append(self.accelerator.gather(metrics[key].detach().reshape(1)).mean().item())
        return loss
