"""losskit.integrations.lightning: an objective plus a regulariser and Lion-K in a LightningModule, a few CPU
steps."""

import pytest
import torch

L = pytest.importorskip("lightning", reason="needs the lightning extra: pip install 'losskit[lightning]'")

import losskit  # noqa: E402
from losskit.integrations.lightning import ObjectiveModule  # noqa: E402


class Record(L.Callback):
    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


def blobs(n=64, d=8, k=3):
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, k, (n,), generator=g)
    x = torch.randn(n, d, generator=g) + 2.0 * torch.nn.functional.one_hot(y, d).float()
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=n)


def fit(module, steps=8):
    rec = Record()
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[rec])
    trainer.fit(module, blobs())
    return rec.losses


def test_objective_regulariser_and_lion_k_decrease_the_loss():
    torch.manual_seed(0)
    module = ObjectiveModule(torch.nn.Linear(8, 3), objective="focal", objective_kwargs={"gamma": 2.0},
                             regularizers={"confidence_penalty": {"beta": 0.1}, "logit_z_loss": {}},
                             optimizer="lion_k", optimizer_kwargs={"lr": 3e-2, "K": "huber"})
    losses = fit(module)
    assert len(losses) == 8 and losses[-1] < losses[0], losses


def test_terms_are_the_objective_plus_the_regularisers():
    torch.manual_seed(0)
    module = ObjectiveModule(torch.nn.Linear(8, 3), objective="focal",
                             regularizers={"confidence_penalty": {"beta": 0.1}})
    x, y = next(iter(blobs()))
    terms = module.objective_terms(module(x), y)
    logits = module(x)
    assert torch.allclose(terms["objective"], losskit.focal(logits, y))
    assert torch.allclose(terms["loss"], losskit.focal(logits, y) + losskit.confidence_penalty(logits, beta=0.1))
    assert isinstance(module.configure_optimizers(), losskit.optim.LionK)


def test_lion_by_name():
    module = ObjectiveModule(torch.nn.Linear(8, 3), optimizer="lion", optimizer_kwargs={"lr": 1e-2})
    assert isinstance(module.configure_optimizers(), losskit.optim.Lion)
    assert fit(module, steps=3)
