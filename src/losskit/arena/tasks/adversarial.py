"""The ``adversarial`` task: adversarial training of an MLP on scikit-learn digits; robust test accuracy
under a PGD attack (L-inf, in standardised feature units)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F

from ...adversarial import pgd
from .. import _train as T
from ..task import Candidate, Task, TrialResult, Unavailable, bind_call
from ._common import entry_of, is_binary

__all__ = ["Adversarial"]


class _Lazy(Mapping):
    """Inputs computed on first use (an objective reads only the ones it takes)."""

    def __init__(self, makers: dict[str, Callable[[], torch.Tensor]]):
        self._makers, self._done = makers, {}

    def __getitem__(self, k):
        if k not in self._done:
            self._done[k] = self._makers[k]()
        return self._done[k]

    def __iter__(self):
        return iter(self._makers)

    def __len__(self):
        return len(self._makers)


class Adversarial(Task):
    """Adversarial training (PGD inputs each step); robust and clean test accuracy."""

    name = "adversarial"
    description = ("MLP on scikit-learn digits trained on PGD (L-inf) inputs; metrics: test accuracy under a "
                   "stronger PGD attack, and clean test accuracy")
    metrics = ("robust_accuracy", "accuracy")
    baseline = "cross_entropy"
    defaults = {"dataset": "digits", "eps": 0.3, "alpha": 0.1, "attack_steps": 3, "eval_steps": 10,
                "epochs": 12, "hidden": 64, "lr": 3e-3, "batch_size": 64, "eval_every": 4}
    quick_config = {"epochs": 8}

    def candidates(self):
        return [
            Candidate("cross_entropy", label="cross_entropy (PGD-AT)"),
            Candidate("doubly_robust_at", {"tau": 1.0}),
            Candidate("doubly_robust_at", {"tau": 0.3}),
            Candidate("weat", {"beta": 6.0, "ce_on": "nat"}),
            Candidate("weat", {"beta": 7.0}),
            Candidate("srat", {"lam": 0.1, "margin": 1.0}),
        ]

    def run(self, candidate, seed, config):
        entry = entry_of(candidate)
        if is_binary(entry):
            raise Unavailable(f"{entry.name} is a binary objective; this task is multi-class")
        x, y = T.load(config["dataset"])
        xtr, ytr, xte, yte = T.split(x, y, seed)
        k = int(y.max()) + 1
        model = T.mlp(xtr.shape[1], config["hidden"], k, seed)
        body, head = model[:-1], model[-1]
        fn, opts = entry.fn, dict(candidate.options)
        gen = torch.Generator().manual_seed(30_000 + seed)

        def attack(xb, yb, steps):
            return pgd(model, xb, yb, eps=config["eps"], alpha=config["alpha"], steps=steps, clamp=None,
                       generator=gen)

        def loss(idx, step):
            xb, yb = xtr[idx], ytr[idx]
            x_adv = attack(xb, yb, config["attack_steps"])
            feats = body(x_adv)
            adv = head(feats)
            inputs = _Lazy({"logits": lambda: adv, "adv_logits": lambda: adv, "target": lambda: yb,
                            "features": lambda: feats, "nat_logits": lambda: model(xb),
                            "losses": lambda: F.cross_entropy(adv, yb, reduction="none")})
            return bind_call(fn, inputs, opts)

        def robust():
            with torch.enable_grad():
                x_adv = attack(xte, yte, config["eval_steps"])
            return T.accuracy(model(x_adv), yte)

        curve = T.train(model, loss, len(ytr), epochs=config["epochs"], lr=config["lr"],
                        batch_size=config["batch_size"], seed=seed, eval_every=config["eval_every"], evaluate=robust)
        rob = robust()
        with torch.no_grad():
            acc = T.accuracy(model(xte), yte)
        return TrialResult({"robust_accuracy": rob, "accuracy": acc}, curve, "robust test accuracy")
