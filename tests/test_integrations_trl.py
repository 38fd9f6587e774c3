"""losskit.integrations.trl: losskit's pairwise heads against TRL's own DPO loss types, and inside a real
``DPOTrainer`` run on a tiny Llama built from a config with an offline word-level tokenizer.

Agreement: TRL's loss is computed by TRL's own code (``DPOTrainer._compute_loss``, on a stand-in trainer whose
model returns given per-token log-probs: the loss types are written inline there), and losskit's by
:class:`LosskitDPOTrainer`'s ``compute_loss`` and by the bare head on the same sequence scores. Every
convention difference is a tested relation (``RELATIONS``). ``AGREEMENT`` is the table in docs/preference.md.
"""

import copy
import math
import os
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

for _k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ[_k] = "1"
pytest.importorskip("transformers", reason="needs the hf extra: pip install 'losskit[hf]'")
trl = pytest.importorskip("trl", reason="needs the hf extra: pip install 'losskit[hf]'")

import losskit  # noqa: E402
from losskit.integrations.trl import LosskitDPOTrainer, resolve_head, sequence_scores_from_batch  # noqa: E402

BETA = 0.1
# TRL loss type (or f-divergence) -> losskit head, its options, the TRL settings. TRL 1.16 has no label
# smoothing in 'sigmoid' (cDPO is a relation below) and no running mean in 'bco_pair' (delta = 0).
CASES = {
    "sigmoid": ("dpo", {}, {}),
    "hinge": ("hinge_dpo", {}, {}),
    "ipo": ("ipo", {}, {}),                                   # both on length-averaged scores
    "exo_pair": ("exo", {"label_smoothing": 1e-3}, {"label_smoothing": 1e-3}),
    "nca_pair": ("nca", {}, {}),
    "robust": ("robust_dpo", {"label_smoothing": 0.2}, {"label_smoothing": 0.2}),
    "bco_pair": ("bco", {"delta": 0.0}, {}),
    "sppo_hard": ("sppo_hard", {}, {}),
    "aot": ("aot", {"paired": True, "label_smoothing": 0.1}, {"label_smoothing": 0.1}),
    "aot_unpaired": ("aot", {"paired": False, "label_smoothing": 0.1}, {"label_smoothing": 0.1}),
    "apo_zero": ("apo_zero", {}, {}),
    "apo_down": ("apo_down", {}, {}),
    "discopop": ("discopop", {"tau": 0.05}, {"discopop_tau": 0.05}),
    "sigmoid_norm": ("dpo", {}, {"aggregation": "mean"}),     # TRL's length-normalised DPO
    "sigmoid+forward_kl": ("f_dpo", {"divergence": "forward_kl"}, {"f_divergence_type": "forward_kl"}),
    "sigmoid+js_divergence": ("f_dpo", {"divergence": "js"}, {"f_divergence_type": "js_divergence"}),
    # TRL's alpha: f'(t) = (t^(a-1) - 1)/(a-1); losskit's: (1 - t^(-alpha))/alpha, so alpha = 1 - a
    "sigmoid+alpha_divergence": ("f_dpo", {"divergence": "alpha", "alpha": 0.7},
                                 {"f_divergence_type": "alpha_divergence", "f_alpha_divergence_coef": 0.3,
                                  "dtype": torch.float32}),   # TRL's alpha path has no float64 branch
}


def synthetic_batch(seed, b=6, t=10, scale=3.0, dtype=torch.float64):
    """A DPOTrainer batch (chosen rows then rejected rows) with completion masks of unequal lengths, per-token
    log-probs (zero outside the completion, as TRL's fused head returns them) and precomputed reference scores."""
    g = torch.Generator().manual_seed(seed)
    prompt = torch.randint(1, 4, (2 * b,), generator=g)
    length = torch.randint(1, t - 4, (2 * b,), generator=g)
    pos = torch.arange(t)
    completion = ((pos >= prompt[:, None]) & (pos < (prompt + length)[:, None])).long()
    per_token = -torch.rand(2 * b, t - 1, generator=g, dtype=dtype) * scale
    per_token = per_token * completion[:, 1:]
    ref = -torch.rand(2 * b, generator=g, dtype=dtype) * scale * length
    inputs = {"input_ids": torch.zeros(2 * b, t, dtype=torch.long), "attention_mask": torch.ones(2 * b, t),
              "completion_mask": completion, "ref_chosen_logps": ref[:b], "ref_rejected_logps": ref[b:]}
    return inputs, per_token


class _Model:
    """Stands in for the policy: returns the batch's per-token log-probs (and the metrics' tensors)."""

    training = True

    def __init__(self, per_token):
        self.per_token = per_token

    def __call__(self, **kwargs):
        z = torch.zeros_like(self.per_token)
        return SimpleNamespace(log_probs=self.per_token, entropy=z, mean_logits=z, is_top1=z.bool())


def stand_in(loss_type, per_token, trl_settings=(), **attrs):
    """The attributes ``DPOTrainer._compute_loss`` and ``LosskitDPOTrainer.compute_loss`` read."""
    s = dict(trl_settings)
    model = _Model(per_token)
    acc = SimpleNamespace(device=torch.device("cpu"), gather=lambda x: x, gather_for_metrics=lambda x: x)
    return SimpleNamespace(
        model=model, accelerator=acc, aux_loss_enabled=False, ld_alpha=None, precompute_ref_logps=True,
        ref_model=None, f_divergence_type=s.get("f_divergence_type", "reverse_kl"),
        f_alpha_divergence_coef=s.get("f_alpha_divergence_coef", 1.0), loss_types=[loss_type], loss_weights=[1.0],
        beta=BETA, label_smoothing=s.get("label_smoothing", 0.0),
        args=SimpleNamespace(discopop_tau=s.get("discopop_tau", 0.05), gradient_checkpointing_kwargs=None),
        use_weighting=False, _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        _total_train_tokens=0, _tp_size=1, **attrs), model


def trl_loss(loss_type, inputs, per_token, trl_settings=()):
    """TRL's own loss (its code, ``DPOTrainer._compute_loss``) on the batch's log-probs."""
    self, model = stand_in(loss_type.split("+")[0], per_token, trl_settings)
    return trl.DPOTrainer._compute_loss(self, model, inputs, False)


def losskit_trainer_loss(head, head_kwargs, inputs, per_token, aggregation=None):
    """``LosskitDPOTrainer.compute_loss`` on the same batch (the integration's path)."""
    fn, default_aggregation, reference_free, extra = resolve_head(head)
    self, model = stand_in("sigmoid", per_token)
    self.head, self.head_name, self.head_aggregation = fn, head, aggregation or default_aggregation
    self.head_reference_free, self.head_extra_inputs = reference_free, extra
    self.head_kwargs, self.head_metrics = {"beta": BETA, **head_kwargs}, True
    self._policy_and_reference_scores = LosskitDPOTrainer._policy_and_reference_scores.__get__(self)
    self.head_inputs = LosskitDPOTrainer.head_inputs.__get__(self)
    return LosskitDPOTrainer.compute_loss(self, model, inputs)


def agreement(name, seeds=range(5)):
    """max |TRL - losskit| over batches (trainer path and bare head), for one row of CASES."""
    head, head_kwargs, settings = CASES[name]
    settings = dict(settings)
    aggregation = settings.pop("aggregation", None)
    dtype = settings.pop("dtype", torch.float64)
    worst = 0.0
    for seed in seeds:
        inputs, per_token = synthetic_batch(seed, dtype=dtype)
        ref = trl_loss(name, inputs, per_token, settings)
        via_trainer = losskit_trainer_loss(head, head_kwargs, inputs, per_token, aggregation)
        agg = aggregation or resolve_head(head)[1]
        pc, pr = sequence_scores_from_batch(per_token, inputs["completion_mask"], agg)
        rc, rr = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        if agg == "mean":
            n = inputs["completion_mask"].sum(1).clamp(min=1.0).chunk(2)
            rc, rr = rc / n[0], rr / n[1]
        bare = getattr(losskit, head)(pc, pr, rc, rr, beta=BETA, **head_kwargs)
        worst = max(worst, abs(ref.item() - via_trainer.item()), abs(ref.item() - bare.item()))
    return worst


@pytest.mark.parametrize("name", list(CASES))
def test_agrees_with_trl(name):
    assert agreement(name) < 1e-6


# ------------------------------------------------------------------------ convention differences as relations
def _scores(seed):
    inputs, per_token = synthetic_batch(seed)
    pc, pr = sequence_scores_from_batch(per_token, inputs["completion_mask"], "sum")
    return inputs, per_token, pc, pr, inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]


def test_ipo_length_normalisation():
    """TRL's 'ipo' averages the log-ratios over the completion tokens; losskit's ``ipo`` takes the scores it is
    given, so it equals TRL on mean scores (the trainer's default for ipo) and differs on summed ones."""
    inputs, per_token, pc, pr, rc, rr = _scores(0)
    n_c, n_r = inputs["completion_mask"].sum(1).chunk(2)
    ref = trl_loss("ipo", inputs, per_token).item()
    assert abs(losskit.ipo(pc / n_c, pr / n_r, rc / n_c, rr / n_r, beta=BETA).item() - ref) < 1e-9
    assert abs(losskit.ipo(pc, pr, rc, rr, beta=BETA).item() - ref) > 1e-3
    assert resolve_head("ipo")[1] == "mean" and resolve_head("dpo")[1] == "sum"


def test_bco_running_mean_is_a_reference_shift():
    """losskit's ``bco`` takes the paper's reward shift delta (a running mean of rewards); TRL 1.16's 'bco_pair'
    has none (delta = 0). ``bco(delta=d)`` is TRL's loss with both reference scores raised by d / beta."""
    inputs, per_token, pc, pr, rc, rr = _scores(1)
    d = 0.37
    shifted = {**inputs, "ref_chosen_logps": rc + d / BETA, "ref_rejected_logps": rr + d / BETA}
    ref = trl_loss("bco_pair", shifted, per_token).item()
    assert abs(losskit.bco(pc, pr, rc, rr, beta=BETA, delta=d).item() - ref) < 1e-9
    assert abs(losskit.bco(pc, pr, rc, rr, beta=BETA, delta=0.0).item() - ref) > 1e-3


def test_cdpo_is_a_mixture_of_trl_sigmoid_and_its_swap():
    """TRL 1.16's 'sigmoid' has no label smoothing; losskit's ``cdpo`` (conservative DPO) is
    ``(1 - eps) sigmoid(chosen, rejected) + eps sigmoid(rejected, chosen)`` in TRL's terms."""
    inputs, per_token, pc, pr, rc, rr = _scores(2)
    b = pc.shape[0]
    swap = torch.cat([per_token[b:], per_token[:b]])
    mask = inputs["completion_mask"]
    swapped = {**inputs, "completion_mask": torch.cat([mask[b:], mask[:b]]),
               "ref_chosen_logps": rr, "ref_rejected_logps": rc}
    eps = 0.15
    mix = (1 - eps) * trl_loss("sigmoid", inputs, per_token) + eps * trl_loss("sigmoid", swapped, swap)
    assert abs(losskit.cdpo(pc, pr, rc, rr, beta=BETA, label_smoothing=eps).item() - mix.item()) < 1e-9


def test_f_dpo_forward_kl_differs_from_trl_by_a_constant_that_cancels():
    """TRL's forward-KL f'(t) = 1 - 1/t, losskit's -1/t: the constant cancels in the chosen-rejected margin;
    TRL's alpha coefficient a is losskit's 1 - alpha (checked in CASES); a = 1 is TRL's reverse-KL limit."""
    inputs, per_token, pc, pr, rc, rr = _scores(3)
    ref = trl_loss("sigmoid", inputs, per_token, {"f_divergence_type": "alpha_divergence",
                                                  "f_alpha_divergence_coef": 1.0}).item()
    assert abs(losskit.f_dpo(pc, pr, rc, rr, beta=BETA, divergence="alpha", alpha=0.0).item() - ref) < 1e-9
    assert abs(losskit.dpo(pc, pr, rc, rr, beta=BETA).item() - ref) < 1e-9


def test_discopop_is_finite_where_trls_exponential_overflows():
    """Same value in range; at a very negative margin TRL's ``exp(-z)`` overflows to inf times a zero weight
    (NaN in float32), losskit's stable form stays finite."""
    pc, pr = torch.tensor([-2000.0]), torch.tensor([-1.0])
    assert torch.isfinite(losskit.discopop(pc, pr, beta=1.0, tau=0.05))
    z = torch.tensor([-1999.0])
    trl_form = -torch.nn.functional.logsigmoid(z) * (1 - torch.sigmoid(z / 0.05)) + torch.exp(-z) * torch.sigmoid(
        z / 0.05)
    assert not torch.isfinite(trl_form).all()


def test_reference_free_and_extra_input_heads_are_declared():
    assert resolve_head("simpo")[2] and not resolve_head("dpo")[2]
    assert resolve_head("egpo")[3] == ("chosen_preference", "rejected_preference")
    with pytest.raises(ValueError, match="not a pairwise head"):
        resolve_head("kto")


# ------------------------------------------------------------------------------------ a real DPOTrainer run
def tiny_setup():
    tokenizers = pytest.importorskip("tokenizers")
    datasets = pytest.importorskip("datasets")
    import transformers

    words = ["<pad>", "<eos>", "<unk>"] + [f"w{i}" for i in range(40)]
    vocab = {w: i for i, w in enumerate(words)}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>",
                                                     unk_token="<unk>")
    g = torch.Generator().manual_seed(0)
    rows = {"prompt": [], "chosen": [], "rejected": []}
    for _ in range(16):
        p = torch.randint(3, 43, (4,), generator=g).tolist()
        rows["prompt"].append(" ".join(words[i] for i in p))
        rows["chosen"].append(" " + " ".join(words[3 + (i % 10)] for i in p))          # a rule to learn
        rows["rejected"].append(" " + " ".join(words[i] for i in torch.randint(13, 43, (4,), generator=g)))
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=len(words), hidden_size=64, intermediate_size=128,
                                   num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                   pad_token_id=0, eos_token_id=1, bos_token_id=1)
    return transformers.LlamaForCausalLM(cfg), tokenizer, datasets.Dataset.from_dict(rows)


def dpo_run(tmp_path, steps=5, **trainer_kwargs):
    model, tokenizer, ds = tiny_setup()
    args = trl.DPOConfig(output_dir=str(tmp_path), max_steps=steps, per_device_train_batch_size=16,
                         learning_rate=5e-3, logging_steps=1, report_to=[], save_strategy="no", use_cpu=True,
                         beta=0.1, disable_tqdm=True, dataloader_num_workers=0, max_length=32)
    trainer = LosskitDPOTrainer(model=model, ref_model=copy.deepcopy(model), args=args, train_dataset=ds,
                                processing_class=tokenizer, **trainer_kwargs)
    trainer.train()
    return [h for h in trainer.state.log_history if "loss" in h]


def test_dpo_trainer_run_with_a_losskit_head_decreases_the_loss(tmp_path):
    logs = dpo_run(tmp_path, head="discopop", head_kwargs={"tau": 0.05})
    losses = [h["loss"] for h in logs]
    assert len(losses) == 5 and losses[-1] < losses[0], losses
    assert math.isclose(losses[0], (math.log(2) + 1) / 2, abs_tol=1e-3)   # discopop at margin 0 (policy = ref)


@pytest.mark.slow
def test_dpo_trainer_run_with_a_head_trl_lacks(tmp_path):
    """A head TRL does not implement (DDO), and a reference-free one (SimPO, mean scores)."""
    for head, kw in (("ddo", {}), ("simpo", {"beta": 2.0, "gamma": 0.5})):
        losses = [h["loss"] for h in dpo_run(tmp_path / head, steps=4, head=head, head_kwargs=kw)]
        assert losses[-1] < losses[0], (head, losses)


def test_trl_options_the_head_cannot_honour_are_refused(tmp_path):
    model, tokenizer, ds = tiny_setup()
    args = trl.DPOConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True, use_weighting=True, max_length=32)
    with pytest.raises(NotImplementedError, match="use_weighting"):
        LosskitDPOTrainer(model=model, ref_model=copy.deepcopy(model), args=args, train_dataset=ds,
                          processing_class=tokenizer, head="dpo")


def test_docs_table_lists_every_case():
    """docs/preference.md carries the agreement table (loss type, losskit head, max |difference|), written from
    ``agreement`` (``python tests/test_integrations_trl.py`` prints it); every row is in it and under 1e-6."""
    import pathlib
    import re

    text = (pathlib.Path(__file__).resolve().parents[1] / "docs" / "preference.md").read_text()
    for name, (head, _, _) in CASES.items():
        row = re.search(rf"^\| `{re.escape(name)}` \| `{head}`[^|]*\|[^|]*\| ([0-9.e+-]+) \|", text, flags=re.M)
        assert row, f"no row for {name} in docs/preference.md"
        assert float(row.group(1)) <= 1e-6


if __name__ == "__main__":
    for name, (head, kw, settings) in CASES.items():
        opts = ", ".join(f"{k}={v}" for k, v in [*kw.items(), *((k, v) for k, v in settings.items()
                                                                  if k == "aggregation")])
        trl_opts = ", ".join(f"{k}={v}" for k, v in settings.items() if k not in ("dtype", "aggregation"))
        trl_opts += " (float32)" if "dtype" in settings else ""
        print(f"| `{name}` | `{head}`{f' ({opts})' if opts else ''} | {trl_opts or '–'} | {agreement(name):.1e} |")


def test_precomputed_reference_and_evaluation(tmp_path):
    """TRL's precomputed reference log-probs feed the head (no reference model kept), and evaluation runs the
    same loss."""
    model, tokenizer, ds = tiny_setup()
    args = trl.DPOConfig(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=8,
                         per_device_eval_batch_size=8, learning_rate=5e-3, report_to=[], save_strategy="no",
                         use_cpu=True, beta=0.1, disable_tqdm=True, max_length=32, precompute_ref_log_probs=True)
    trainer = LosskitDPOTrainer(model=model, args=args, train_dataset=ds, eval_dataset=ds.select(range(8)),
                                processing_class=tokenizer, head="ipo")
    assert trainer.ref_model is None and trainer.head_aggregation == "mean"
    before = trainer.evaluate()["eval_loss"]
    trainer.train()
    after = trainer.evaluate()["eval_loss"]
    assert math.isclose(before, 25.0, rel_tol=1e-4)    # IPO at margin 0: (1/(2 beta))^2
    assert after < before


def test_a_head_with_extra_inputs_through_head_inputs(tmp_path):
    """EGPO needs preference probabilities against an opponent: a subclass supplies them from the batch."""

    class EGPOTrainer(LosskitDPOTrainer):
        def head_inputs(self, inputs):
            n = inputs["input_ids"].shape[0] // 2
            return {"chosen_preference": torch.full((n,), 0.8), "rejected_preference": torch.full((n,), 0.2)}

    model, tokenizer, ds = tiny_setup()
    args = trl.DPOConfig(output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=16, learning_rate=5e-3,
                         logging_steps=1, report_to=[], save_strategy="no", use_cpu=True, beta=0.1,
                         disable_tqdm=True, max_length=32)
    trainer = EGPOTrainer(model=model, ref_model=copy.deepcopy(model), args=args, train_dataset=ds,
                          processing_class=tokenizer, head="egpo")
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert losses[-1] < losses[0], losses
    with pytest.raises(NotImplementedError, match="head_inputs"):
        LosskitDPOTrainer.head_inputs(trainer, {})
