"""The ``representation`` task: embeddings of digits learned from two augmented views; linear probe and
recall@1."""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F

from .. import _train as T
from ..task import Candidate, Task, TrialResult, bind_call
from ._common import entry_of

__all__ = ["Representation"]

#: The input kind of the objectives that see class labels (supervised); the others get only the two views.
SUPERVISED_KIND = "features+labels"


def _augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Digits-image augmentations: a random shift by up to one pixel, pixel dropout, Gaussian noise."""
    img = x.view(-1, 8, 8)
    dx, dy = (int(v) for v in torch.randint(-1, 2, (2,), generator=g))
    img = torch.roll(img, shifts=(dy, dx), dims=(1, 2))
    keep = (torch.rand(img.shape, generator=g) > 0.2).float()
    img = img * keep + 0.3 * torch.randn(img.shape, generator=g)
    return img.reshape(len(x), 64)


def _labels_for(fn, inputs: dict, y: torch.Tensor) -> torch.Tensor:
    """The labels of a supervised objective: one per row of its first input. ``features`` stacks the two
    views on dim 1 (one row per example: ``y``); ``embeddings`` concatenates them (two rows per example:
    ``y`` twice, in the same order)."""
    first = next(iter(inspect.signature(fn).parameters))
    rows = len(inputs[first]) if first in inputs else len(y)
    return y if rows == len(y) else y.repeat(rows // len(y))


class Representation(Task):
    """Embeddings of digits learned from two augmented views; linear probe and recall@1."""

    name = "representation"
    description = ("digits, an MLP encoder trained on pairs of augmented views (shift, pixel dropout, noise); "
                   "metrics: linear-probe test accuracy on frozen embeddings, recall@1 (nearest test neighbour "
                   "has the same label). supcon, triplet and circle use labels; the rest are self-supervised")
    metrics = ("probe_accuracy", "recall_at_1")
    baseline = "info_nce"
    defaults = {"dim": 32, "hidden": 128, "epochs": 40, "lr": 2e-3, "batch_size": 256, "eval_every": 10}
    quick_config = {"epochs": 20, "eval_every": 10}
    quick = ("info_nce", "nt_xent", "supcon", "dcl", "barlow_twins", "vicreg", "triplet_margin")

    def candidates(self):
        return [*[Candidate(n) for n in ("info_nce", "nt_xent", "supcon", "cwcl", "dcl", "mv_infonce",
                                          "mv_dhel", "barlow_twins", "vicreg", "siglip", "n_pairs",
                                          "circle_loss")],
                # batch-hard mining, cosine distance: "all" builds an (n, n, n) tensor (512^3 floats here) and the
                # Euclidean distance an (n, n, D) one
                Candidate("triplet_margin", {"mining": "batch_hard", "distance": "cosine"}, label="triplet_margin")]

    def split(self, seed):
        """The train/test split of one seed (a subclass brings its own data)."""
        x, y = T.load("digits")
        return T.split(x, y, seed)

    def augment(self, x, g):
        return _augment(x, g)

    def encoder(self, d_in: int, config, seed: int):
        return T.mlp(d_in, config["hidden"], config["dim"], seed)

    @staticmethod
    def sees_labels(entry) -> bool:
        """Does the objective see the labels? Read from its input kind (features+labels: supcon, triplet);
        an objective that merely accepts optional labels (dcl) is trained self-supervised."""
        return entry.input_kind.name == SUPERVISED_KIND

    def run(self, candidate, seed, config):
        entry = entry_of(candidate)
        xtr, ytr, xte, yte = self.split(seed)
        enc = self.encoder(xtr.shape[1], config, seed)
        g = torch.Generator().manual_seed(40_000 + seed)
        opts = dict(candidate.options)
        supervised = self.sees_labels(entry)
        augment = self.augment

        def loss(idx, step):
            xb, yb = xtr[idx], ytr[idx]
            z1, z2 = enc(augment(xb, g)), enc(augment(xb, g))
            inputs = {"z1": z1, "z2": z2, "views": [z1, z2], "features": torch.stack([z1, z2], 1),
                      "embeddings": torch.cat([z1, z2])}
            if supervised:
                inputs["labels"] = _labels_for(entry.fn, inputs, yb)
            aliases = {"p": ["z1"], "q": ["z2"], "image_features": ["z1"], "text_features": ["z2"],
                       "image": ["z1"], "text": ["z2"], "anchors": ["z1"], "positives": ["z2"]}
            return bind_call(entry.fn, inputs, opts, aliases=aliases)

        def probe():
            return _probe(enc(xtr), ytr, enc(xte), yte)[0]

        curve = T.train(enc, loss, len(ytr), epochs=config["epochs"], lr=config["lr"],
                        batch_size=config["batch_size"], seed=seed, eval_every=config["eval_every"],
                        evaluate=probe)
        with torch.no_grad():
            acc, r1 = _probe(enc(xtr), ytr, enc(xte), yte)
        return TrialResult({"probe_accuracy": acc, "recall_at_1": r1}, curve, "linear-probe accuracy")


def _probe(ztr, ytr, zte, yte):
    from sklearn.linear_model import LogisticRegression

    a, b = ztr.numpy(), zte.numpy()
    mu, sd = a.mean(0), a.std(0) + 1e-6
    clf = LogisticRegression(max_iter=300).fit((a - mu) / sd, ytr.numpy())
    acc = float((clf.predict((b - mu) / sd) == yte.numpy()).mean())
    zn = F.normalize(zte, dim=-1)
    sim = zn @ zn.T
    sim.fill_diagonal_(-float("inf"))
    r1 = float((yte[sim.argmax(-1)] == yte).float().mean())
    return acc, r1
