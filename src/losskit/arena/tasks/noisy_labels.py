"""The ``noisy_labels`` task: classification with corrupted training labels; clean test accuracy."""

from __future__ import annotations

import torch

from ..._core.domains import Choice
from .. import _train as T
from ..claims import better_than_baseline
from ..task import Candidate, Task, TrialResult, Unavailable, bind_call
from ._common import entry_of, is_binary

__all__ = ["NoisyLabels"]


def _robust_claim(boards):
    return better_than_baseline(
        boards, task="noisy_labels", where={"noise": 0.4, "noise_type": "symmetric"},
        contenders=("gce", "sce", "mae", "ldr_kl"), reference="cross_entropy",
        statement="Noise-robust losses (GCE, SCE, MAE, LDR) beat cross-entropy at 40% symmetric label noise",
        source="Zhang & Sabuncu 2018 (GCE, arXiv:1805.07836); Wang et al. 2019 (SCE, arXiv:1908.06112); "
               "Ghosh et al. 2017 (MAE, arXiv:1712.09482); Zhu et al. 2023 (LDR, arXiv:2304.10898)")


class NoisyLabels(Task):
    """Classification with corrupted training labels; clean test accuracy."""

    name = "noisy_labels"
    description = ("MLP on scikit-learn digits / breast_cancer / wine, training labels corrupted "
                   "(symmetric or asymmetric, rate `noise`); metric: clean test accuracy")
    metrics = ("accuracy",)
    baseline = "cross_entropy"
    defaults = {"dataset": "digits", "noise": 0.4, "noise_type": "symmetric", "epochs": 60,
                "hidden": 128, "lr": 3e-3, "batch_size": 64, "eval_every": 5}
    quick_config = {"epochs": 30, "batch_size": 128, "eval_every": 3}
    quick_sweep = {"noise": [0.0, 0.2, 0.4]}
    settings = {"dataset": Choice(*T.DATASETS), "noise_type": Choice("symmetric", "asymmetric")}
    quick = ("cross_entropy", "focal(gamma=2.0)", "gce(q=0.7)", "sce", "mae", "ldr_kl")
    claims = (_robust_claim,)

    def candidates(self):
        return [
            Candidate("cross_entropy"),
            Candidate("focal", {"gamma": 2.0}),
            Candidate("gce", {"q": 0.7}),
            Candidate("sce"),
            Candidate("mae"),
            *[Candidate("comp_sum", {"tau": t}) for t in (0.5, 1.5, 2.0)],
            Candidate("ldr_kl"),
            Candidate("poly_loss"),
            Candidate("spherical_z_loss"),
            Candidate("stablemax_cross_entropy"),
            Candidate("entmax_loss", {"alpha": 1.5}),
        ]

    def run(self, candidate, seed, config):
        entry = entry_of(candidate)
        if is_binary(entry):
            raise Unavailable(f"{entry.name} is a binary objective; this task is multi-class")
        x, y = T.load(config["dataset"])
        xtr, ytr, xte, yte = T.split(x, y, seed)
        k = int(y.max()) + 1
        noisy = T.corrupt(ytr, config["noise"], config["noise_type"], k, seed, config["dataset"])
        model = T.mlp(xtr.shape[1], config["hidden"], k, seed)
        fn, opts = entry.fn, dict(candidate.options)

        def loss(idx, step):
            return bind_call(fn, {"logits": model(xtr[idx]), "target": noisy[idx]}, opts)

        curve = T.train(model, loss, len(ytr), epochs=config["epochs"], lr=config["lr"],
                        batch_size=config["batch_size"], seed=seed, eval_every=config["eval_every"],
                        evaluate=lambda: T.accuracy(model(xte), yte))
        with torch.no_grad():
            acc = T.accuracy(model(xte), yte)
        return TrialResult({"accuracy": acc}, curve, "test accuracy")
