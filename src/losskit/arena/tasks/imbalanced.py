"""The ``imbalanced`` task: binary classification with the minority class subsampled; F1, balanced
accuracy, MCC."""

from __future__ import annotations

import math

import torch

from .. import _train as T
from ..claims import better_than_baseline
from ..task import Candidate, Task, TrialResult, bind_call
from ._common import entry_of, is_binary

__all__ = ["Imbalanced"]


def _anyloss_claim(boards):
    return better_than_baseline(
        boards, task="imbalanced", where={}, contenders=("anyloss",), reference="cross_entropy", metric="f1",
        statement="AnyLoss (optimising a soft confusion-matrix F1) beats cross-entropy on F1 under class imbalance",
        source="Han et al. 2024, AnyLoss: Transforming Classification Metrics into Loss Functions (arXiv:2405.14745)")


class Imbalanced(Task):
    """Binary classification with the minority class subsampled; F1, balanced accuracy, MCC."""

    name = "imbalanced"
    description = ("breast_cancer, malignant (the positive class) subsampled to `ratio` x the benign count "
                   "in training; MLP; metrics on the untouched stratified test split: F1, balanced accuracy, MCC")
    metrics = ("f1", "balanced_accuracy", "mcc")
    baseline = "cross_entropy"
    defaults = {"ratio": 0.1, "epochs": 60, "hidden": 32, "lr": 3e-3, "batch_size": 64, "eval_every": 5}
    quick_config = {"epochs": 40, "eval_every": 4}
    quick = ("cross_entropy", "weighted_ce", "binary_focal", "anyloss(metric=f1)", "ensloss")
    claims = (_anyloss_claim,)
    symbolic_options = {"cross_entropy": {"weight": ("inverse_frequency",)}}

    def candidates(self):
        return [
            Candidate("cross_entropy"),
            Candidate("cross_entropy", {"weight": "inverse_frequency"}, label="weighted_ce"),
            Candidate("focal", {"gamma": 2.0}),
            Candidate("binary_focal"),
            Candidate("anyloss", {"metric": "f1"}),
            Candidate("anyloss", {"metric": "balanced_accuracy"}),
            Candidate("ensloss"),
        ]

    def data(self, seed, ratio):
        x, y = T.load("breast_cancer")
        y = 1 - y  # malignant (the minority) is the positive class
        xtr, ytr, xte, yte = T.split(x, y, seed)
        pos = torch.nonzero(ytr == 1).flatten()
        neg = torch.nonzero(ytr == 0).flatten()
        keep = max(2, int(round(ratio * len(neg))))
        g = torch.Generator().manual_seed(30_000 + seed)
        pos = pos[torch.randperm(len(pos), generator=g)[:keep]]
        idx = torch.cat([neg, pos])
        return xtr[idx], ytr[idx], xte, yte

    def run(self, candidate, seed, config):
        entry = entry_of(candidate)
        xtr, ytr, xte, yte = self.data(seed, config["ratio"])
        binary = is_binary(entry)
        model = T.mlp(xtr.shape[1], config["hidden"], 1 if binary else 2, seed)
        opts = dict(candidate.options)
        if opts.get("weight") == "inverse_frequency":
            counts = torch.bincount(ytr, minlength=2).float()
            opts["weight"] = counts.sum() / (2 * counts)

        def forward(x):
            out = model(x)
            return out.squeeze(-1) if binary else out

        def predict(x):
            out = forward(x)
            return (out > 0).long() if binary else out.argmax(-1)

        gen = torch.Generator().manual_seed(70_000 + seed)  # stochastic objectives (EnsLoss) draw from it

        def loss(idx, step):
            tgt = ytr[idx].float() if binary else ytr[idx]
            return bind_call(entry.fn, {"logits": forward(xtr[idx]), "target": tgt, "generator": gen}, opts)

        curve = T.train(model, loss, len(ytr), epochs=config["epochs"], lr=config["lr"],
                        batch_size=config["batch_size"], seed=seed, eval_every=config["eval_every"],
                        evaluate=lambda: _f1(predict(xte), yte))
        with torch.no_grad():
            pred = predict(xte)
        return TrialResult(_binary_metrics(pred, yte), curve, "test F1")


def _f1(pred, y):
    tp = float(((pred == 1) & (y == 1)).sum())
    fp = float(((pred == 1) & (y == 0)).sum())
    fn = float(((pred == 0) & (y == 1)).sum())
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def _binary_metrics(pred, y):
    tp = float(((pred == 1) & (y == 1)).sum())
    tn = float(((pred == 0) & (y == 0)).sum())
    fp = float(((pred == 1) & (y == 0)).sum())
    fn = float(((pred == 0) & (y == 1)).sum())
    tpr = tp / max(tp + fn, 1)
    tnr = tn / max(tn + fp, 1)
    denom = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return {"f1": _f1(pred, y), "balanced_accuracy": 0.5 * (tpr + tnr),
            "mcc": 0.0 if denom == 0 else (tp * tn - fp * fn) / denom}
