"""``transformers.Trainer``: the causal-LM loss from the last hidden state and the LM head, no logits.

Recipe (``pip install 'losskit[hf]'``)::

    from losskit.integrations.transformers import fused_causal_lm_loss
    trainer = transformers.Trainer(model=model, args=args, train_dataset=ds,
                                   compute_loss_func=fused_causal_lm_loss(model))

``transformers.Trainer`` calls ``compute_loss_func(outputs, labels, num_items_in_batch=...)`` after
``outputs = model(**inputs)`` (the labels popped from the inputs, so the model computes no loss of its own).
:func:`fused_causal_lm_loss` installs a forward pre-hook on the model that asks it for its hidden states
(``output_hidden_states=True``) and, in training mode when no ``labels`` are passed, for the logits of the
last position only (``logits_to_keep=1``): the ``(B, T, V)`` logits are never formed. The loss is then
:func:`losskit.fused_linear_cross_entropy` of ``hidden_states[-1]`` (the final-normed state the LM head
reads) and the LM head's weight (and bias), with transformers' conventions: labels shifted left by one
(position t predicts token t+1), ``ignore_index=-100``, the mean over non-ignored tokens, or the sum divided
by ``num_items_in_batch`` when the Trainer passes it (gradient accumulation: the mean over the whole
accumulated batch). Gemma-2 style ``config.final_logit_softcapping`` is applied; a model that scales its
logits some other way (``config.logit_scale``) is refused.

Equal to the model's own loss (``model(input_ids, labels=labels).loss``) and its gradients to float
rounding (tests/test_integrations_transformers.py); the peak-memory saving is measured in docs/fused.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import require

require("hf", "transformers")

from ..fused import fused_linear_cross_entropy  # noqa: E402

__all__ = ["FusedCausalLMLoss", "fused_causal_lm_loss", "tiny_llama", "TINY_LLAMA"]

#: The tiny Llama of the tests, the README recipes and the arena (``--policy tiny-llama``): built from a config,
#: nothing downloaded.
TINY_LLAMA = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2)


class FusedCausalLMLoss:
    """A ``compute_loss_func`` for ``transformers.Trainer``: fused causal-LM cross-entropy (see the module).

    Args:
        model: the causal LM (a ``PreTrainedModel`` with ``get_output_embeddings()``); a forward pre-hook is
            installed on it (:meth:`remove` takes it off).
        ignore_index: the label that costs nothing (transformers: -100).
        label_smoothing, z_loss, chunk_size: passed to :func:`losskit.fused_linear_cross_entropy`.
        keep_logits: ``False`` (default): in training mode the model forms the logits of the last position
            only; ``True``: the model's full logits are kept (no memory saving, for callbacks that read them).
    """

    def __init__(self, model: torch.nn.Module, *, ignore_index: int = -100, label_smoothing: float = 0.0,
                 z_loss: float = 0.0, chunk_size: int | None = None, keep_logits: bool = False):
        config = getattr(model, "config", None)
        if getattr(config, "logit_scale", None) not in (None, 1, 1.0):
            raise NotImplementedError("the model scales its logits (config.logit_scale): not supported")
        if model.get_output_embeddings() is None:
            raise ValueError("the model has no output embeddings (LM head): not a causal LM")
        self.model = model
        self.ignore_index = ignore_index
        self.options = {"label_smoothing": label_smoothing, "z_loss": z_loss, "chunk_size": chunk_size,
                        "softcap": getattr(config, "final_logit_softcapping", None)}
        self.keep_logits = keep_logits
        self._handle = model.register_forward_pre_hook(self._ask_for_hidden_states, with_kwargs=True)

    def _ask_for_hidden_states(self, module, args, kwargs):
        kwargs = {**kwargs, "output_hidden_states": True}
        if module.training and not self.keep_logits and kwargs.get("labels") is None:
            kwargs.setdefault("logits_to_keep", 1)
        return args, kwargs

    def remove(self) -> None:
        """Take the forward pre-hook off the model (it then returns full logits and no hidden states)."""
        self._handle.remove()

    def __call__(self, outputs, labels: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
        hidden_states = outputs.hidden_states if hasattr(outputs, "hidden_states") else outputs["hidden_states"]
        if hidden_states is None:
            raise ValueError("the model returned no hidden states (was the forward pre-hook removed?)")
        if labels is None:
            raise ValueError("no labels: the causal-LM loss needs them (a 'labels' column in the batch)")
        hidden = hidden_states[-1]
        head = self.model.get_output_embeddings()
        target = F.pad(labels, (0, 1), value=self.ignore_index)[..., 1:].to(hidden.device)
        reduction = "mean" if num_items_in_batch is None else "sum"
        loss = fused_linear_cross_entropy(hidden.reshape(-1, hidden.shape[-1]), head.weight, target.reshape(-1),
                                          linear_bias=getattr(head, "bias", None), ignore_index=self.ignore_index,
                                          reduction=reduction, **self.options)
        if num_items_in_batch is not None:
            if torch.is_tensor(num_items_in_batch):
                num_items_in_batch = num_items_in_batch.to(loss.device)
            loss = loss / num_items_in_batch
        return loss


def fused_causal_lm_loss(model: torch.nn.Module, **options) -> FusedCausalLMLoss:
    """:class:`FusedCausalLMLoss` for ``model``: pass it as ``transformers.Trainer(compute_loss_func=...)``."""
    return FusedCausalLMLoss(model, **options)


def tiny_llama(seed: int = 0, dtype: torch.dtype = torch.float32, **config):
    """A randomly initialised ``LlamaForCausalLM`` of :data:`TINY_LLAMA`'s size (``config`` overrides it), seeded
    by ``seed`` (the global RNG's state is restored)."""
    import transformers

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**{**TINY_LLAMA, **config}))
    return model.to(dtype)
