"""What the built-in tasks share: embedded data sets, label noise, an MLP, one training loop."""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

DATASETS = ("digits", "breast_cancer", "wine")


@functools.lru_cache(maxsize=8)
def load(name: str) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled data sets (shipped with scikit-learn, nothing is downloaded)."""
    from sklearn import datasets

    loaders = {"digits": datasets.load_digits, "breast_cancer": datasets.load_breast_cancer,
               "wine": datasets.load_wine}
    if name not in loaders:
        raise ValueError(f"dataset: expected one of {', '.join(DATASETS)}, got {name!r}")
    x, y = loaders[name](return_X_y=True)
    return x.astype(np.float32), y.astype(np.int64)


def split(x: np.ndarray, y: np.ndarray, seed: int, test_fraction: float = 0.3):
    """Stratified train/test split, features standardised with the train statistics, as tensors."""
    from sklearn.model_selection import train_test_split

    xtr, xte, ytr, yte = train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=y)
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
    t = lambda a: torch.tensor((a - mu) / sd, dtype=torch.float32)  # noqa: E731
    return t(xtr), torch.tensor(ytr), t(xte), torch.tensor(yte)


#: Class-conditional ("asymmetric") flips: digits follows Patrini et al. 2017's MNIST pairs
#: (2->7, 3->8, 5<->6, 7->1); other data sets flip class c to c+1 (mod K).
ASYMMETRIC = {"digits": {2: 7, 3: 8, 5: 6, 6: 5, 7: 1}}


def corrupt(y: torch.Tensor, rate: float, kind: str, num_classes: int, seed: int,
            dataset: str = "") -> torch.Tensor:
    """Noisy copy of labels ``y``.

    ``symmetric``: each label, with probability ``rate``, is replaced by a different class drawn
    uniformly. ``asymmetric``: each label of a class with a flip partner, with probability ``rate``,
    becomes its partner (see :data:`ASYMMETRIC`).
    """
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"noise: expected a rate in [0, 1), got {rate}")
    g = torch.Generator().manual_seed(10_000 + seed)
    flip = torch.rand(len(y), generator=g) < rate
    noisy = y.clone()
    if kind == "symmetric":
        offset = torch.randint(1, num_classes, (len(y),), generator=g)
        noisy[flip] = (y[flip] + offset[flip]) % num_classes
    elif kind == "asymmetric":
        pairs = ASYMMETRIC.get(dataset, {c: (c + 1) % num_classes for c in range(num_classes)})
        target = y.clone()
        for a, b in pairs.items():
            target[y == a] = b
        noisy[flip] = target[flip]
    else:
        raise ValueError(f"noise_type: expected 'symmetric' or 'asymmetric', got {kind!r}")
    return noisy


def mlp(d_in: int, hidden: int, d_out: int, seed: int, depth: int = 1) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    d = d_in
    for _ in range(depth):
        layers += [nn.Linear(d, hidden), nn.ReLU()]
        d = hidden
    layers.append(nn.Linear(d, d_out))
    return nn.Sequential(*layers)


def train(model: nn.Module, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
          n: int, *, epochs: int, lr: float, batch_size: int, seed: int,
          evaluate: Callable[[], float] | None = None, eval_every: int = 0,
          params=None, weight_decay: float = 0.0, nonfinite: str = "stop") -> list[tuple[float, float]]:
    """Mini-batch Adam for ``epochs`` passes over ``n`` examples; the one loop every task uses.

    ``loss_fn(index, step)`` computes the loss of the mini-batch ``index``; ``evaluate`` (no grad) is
    recorded every ``eval_every`` epochs as the learning curve. A non-finite loss stops training
    (the trial then reports the model as it is: diverging is a result, not a crash); with
    ``nonfinite="raise"`` it fails the trial instead, naming the step (the user tasks: a user's loss that
    returns NaN is a failed trial with that message).
    """
    opt = torch.optim.Adam(model.parameters() if params is None else params, lr=lr,
                           weight_decay=weight_decay)
    g = torch.Generator().manual_seed(20_000 + seed)
    curve: list[tuple[float, float]] = []
    step = 0
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            loss = loss_fn(idx, step)
            if not torch.isfinite(loss):
                if nonfinite == "raise":
                    raise FloatingPointError(f"the objective returned {float(loss.detach())} at step {step} "
                                             f"(epoch {epoch + 1})")
                return curve
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
        if evaluate is not None and eval_every and ((epoch + 1) % eval_every == 0 or epoch + 1 == epochs):
            model.eval()
            with torch.no_grad():
                curve.append((epoch + 1, float(evaluate())))
    model.eval()
    return curve


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(-1) == y).float().mean())


def accuracy_of(pred: torch.Tensor, y: torch.Tensor) -> float:
    """Accuracy of predicted class indices."""
    return float((pred == y).float().mean())
