"""losskit.integrations.transformers: the fused causal-LM loss inside ``transformers.Trainer`` on a tiny Llama
built from a config (no download), checked against the model's own loss, its gradients, a short Trainer run,
and the peak memory."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

for _k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ[_k] = "1"
transformers = pytest.importorskip("transformers", reason="needs the hf extra: pip install 'losskit[hf]'")

from losskit.integrations.transformers import FusedCausalLMLoss, fused_causal_lm_loss  # noqa: E402

TINY = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2)


def tiny_llama(dtype=torch.float32, **kw):
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(**{**TINY, **kw})).to(dtype)


def batch(b=3, t=12, v=256):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, v, (b, t), generator=g)
    labels = ids.clone()
    labels[0, :4] = -100          # a prompt
    labels[2, -3:] = -100         # padding
    return ids, labels


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("tied", [False, True])
def test_loss_and_gradients_equal_the_models_own(dtype, tied):
    model = tiny_llama(dtype, tie_word_embeddings=tied)
    ids, labels = batch()
    params = [p for p in model.parameters() if p.requires_grad]
    ref = model(input_ids=ids, labels=labels).loss            # transformers' own ForCausalLMLoss
    g_ref = torch.autograd.grad(ref, params)
    loss_fn = fused_causal_lm_loss(model)
    model.train()
    out = model(input_ids=ids)
    assert out.logits.shape == (3, 1, 256)                    # only the last position's logits were formed
    loss = loss_fn(out, labels)
    g = torch.autograd.grad(loss, params)
    assert abs(loss.item() - ref.item()) < 1e-5
    assert max((a - b).abs().max().item() for a, b in zip(g, g_ref)) < 1e-5
    loss_fn.remove()
    assert model(input_ids=ids).logits.shape == (3, 12, 256)


def test_num_items_in_batch_is_the_accumulated_mean():
    """With ``num_items_in_batch`` (gradient accumulation) the loss is the sum over this micro-batch divided by
    the token count of the whole accumulated batch, as transformers' ``fixed_cross_entropy``."""
    model = tiny_llama(torch.float64)
    ids, labels = batch()
    n = torch.tensor(50)
    ref = model(input_ids=ids, labels=labels, num_items_in_batch=n).loss
    loss_fn = FusedCausalLMLoss(model)
    loss = loss_fn(model(input_ids=ids), labels, num_items_in_batch=n)
    assert abs(loss.item() - ref.item()) < 1e-5
    count = int((labels[:, 1:] != -100).sum())
    mean = loss_fn(model(input_ids=ids), labels)
    assert abs(loss.item() - mean.item() * count / 50) < 1e-9


def test_eval_mode_keeps_full_logits():
    model = tiny_llama()
    ids, labels = batch()
    loss_fn = fused_causal_lm_loss(model)
    model.eval()
    with torch.no_grad():
        out = model(input_ids=ids)
        assert out.logits.shape == (3, 12, 256)
        ref = model(input_ids=ids, labels=labels).loss
        assert abs(loss_fn(out, labels).item() - ref.item()) < 1e-5


def test_a_model_with_logit_scale_is_refused():
    model = tiny_llama()
    model.config.logit_scale = 0.5
    with pytest.raises(NotImplementedError, match="logit_scale"):
        fused_causal_lm_loss(model)


def test_trainer_run_decreases_the_loss(tmp_path):
    datasets = pytest.importorskip("datasets", reason="needs the hf extra: pip install 'losskit[hf]'")
    model = tiny_llama()
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(0, 256, (8, 16), generator=g)
    ds = datasets.Dataset.from_dict({"input_ids": ids.tolist(), "labels": ids.tolist()})
    args = transformers.TrainingArguments(output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=8,
                                          learning_rate=1e-2, logging_steps=1, report_to=[], save_strategy="no",
                                          use_cpu=True, disable_tqdm=True, dataloader_num_workers=0)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=ds,
                                   compute_loss_func=fused_causal_lm_loss(model))
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 3 and losses[-1] < losses[0], losses


_MEMORY_SCRIPT = textwrap.dedent("""
    import json, sys, torch, transformers
    from losskit.integrations.transformers import fused_causal_lm_loss
    from losskit.testing.memory import PeakRSS
    torch.set_num_threads(2)
    mode, vocab, b, t = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2)
    model = transformers.LlamaForCausalLM(cfg).train()
    ids = torch.randint(0, vocab, (b, t))
    loss_fn = fused_causal_lm_loss(model) if mode == "fused" else None
    with PeakRSS() as m:
        if mode == "fused":
            loss = loss_fn(model(input_ids=ids), ids)
        else:
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
    print(json.dumps({"mode": mode, "loss": loss.item(), "peak_increase_mib": m.increase / 2**20}))
""")


def measure_peak(mode, vocab=32000, b=4, t=256):
    """Peak resident-memory increase (MiB) of one forward + backward, in a fresh process (VmHWM, reset at the start:
    ``ru_maxrss`` would carry the pytest parent's peak into the child)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    out = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, mode, str(vocab), str(b), str(t)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
def test_peak_memory_is_lower():
    """vocab 32000, 4 x 256 tokens, float32 on CPU: the model's own loss forms the (4, 256, 32000) logits
    (125 MiB) and the loss's copies and gradients of them; the fused loss forms a (chunk, V) buffer only.
    The numbers are recorded in docs/fused.md."""
    naive, fused = measure_peak("naive"), measure_peak("fused")
    assert abs(naive["loss"] - fused["loss"]) < 1e-4
    assert naive["peak_increase_mib"] > 125, naive       # the meter sees at least the logits themselves
    assert fused["peak_increase_mib"] < 0.6 * naive["peak_increase_mib"], (naive, fused)


def test_arena_preference_on_a_tiny_llama():
    """``losskit arena preference --policy tiny-llama``: the bandit's K responses become K token sequences scored
    by a tiny Llama; DPO on Bradley-Terry pairs moves the restricted policy toward the preferred responses."""
    from losskit.arena.task import Candidate
    from losskit.arena.tasks.preference import Preference

    task = Preference()
    cfg = task.config({"policy": "tiny-llama", "epochs": 3, "pairs": 512, "eval_every": 1, "llama_lr": 0.01})
    assert cfg["policy"] == "tiny-llama"
    result = task.run(Candidate("dpo"), 0, cfg)
    assert result.metrics["win_rate"] > 0.55 and result.metrics["kl_to_ref"] > 0
    assert "policy" not in task.config({})          # the bandit's configuration is unchanged


def test_arena_cli_policy_flag(tmp_path, monkeypatch, capsys):
    from losskit.cli import main

    monkeypatch.chdir(tmp_path)
    rc = main(["arena", "preference", "--policy", "tiny-llama", "--objectives", "dpo", "--seeds", "1",
               "--backend", "serial", "--no-progress", "--set", "epochs=1", "--set", "pairs=256",
               "--set", "eval_every=1"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "policy=tiny-llama" in out and "ran 1 trials" in out


def test_gradient_accumulation_step_equals_the_models_own(tmp_path):
    """One optimiser step with gradient accumulation (2 micro-batches of unequal token counts): the parameters
    after it equal those of the Trainer's default loss (the model's own, with ``num_items_in_batch``)."""
    datasets = pytest.importorskip("datasets", reason="needs the hf extra: pip install 'losskit[hf]'")
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 256, (4, 12), generator=g)
    labels = ids.clone()
    labels[0, :9] = -100
    labels[1, :2] = -100                         # micro-batches of 2 + 9 and 11 + 11 predicted tokens
    ds = datasets.Dataset.from_dict({"input_ids": ids.tolist(), "labels": labels.tolist()})
    after = []
    for fused in (False, True):
        model = tiny_llama(torch.float64)
        args = transformers.TrainingArguments(output_dir=str(tmp_path / str(fused)), max_steps=1,
                                              per_device_train_batch_size=2, gradient_accumulation_steps=2,
                                              optim="sgd", learning_rate=0.5, report_to=[], save_strategy="no",
                                              use_cpu=True, disable_tqdm=True, dataloader_num_workers=0)
        kw = {"compute_loss_func": fused_causal_lm_loss(model)} if fused else {}
        trainer = transformers.Trainer(model=model, args=args, train_dataset=ds, **kw)
        trainer.train()
        after.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    moved = (after[0] - torch.cat([p.detach().flatten() for p in tiny_llama(torch.float64).parameters()])).abs()
    assert moved.max() > 1e-3                    # the step did move the parameters
    assert (after[0] - after[1]).abs().max() < 1e-5


def test_bfloat16_model():
    """A bfloat16 model: the fused loss (float32 GEMMs on upcast operands, float32 result) is within bfloat16
    rounding of the model's own loss (bfloat16 logits, upcast), and its gradients reach every parameter."""
    model = tiny_llama(torch.bfloat16)
    ids, labels = batch()
    ref = model(input_ids=ids, labels=labels).loss
    loss_fn = fused_causal_lm_loss(model)
    loss = loss_fn(model.train()(input_ids=ids), labels)
    assert loss.dtype == torch.float32
    assert abs(loss.item() - ref.item()) < 2e-2 * abs(ref.item())
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
