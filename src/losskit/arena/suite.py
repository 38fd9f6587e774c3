"""The built-in arena tasks. Each is a :class:`~losskit.arena.task.Task`: data, model, metrics,
candidates, baseline; the training loop and data helpers they share live in :mod:`._train`."""

from __future__ import annotations

import functools
import math
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from . import _train as T
from .claims import better_than_baseline
from .task import Candidate, Task, TrialResult, Unavailable, bind_call, register_task

__all__ = ["NoisyLabels", "Imbalanced", "Distillation", "Representation", "Preference", "Transport"]


def _entry(c: Candidate):
    missing = c.missing()
    if missing:
        raise Unavailable(f"not registered: {', '.join(missing)}")
    return c.entry()


def _is_binary(entry) -> bool:
    return "binary" in entry.input_kind.name


# ------------------------------------------------------------------------------------ noisy labels
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
        entry = _entry(candidate)
        if _is_binary(entry):
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


# -------------------------------------------------------------------------------------- imbalanced
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
        entry = _entry(candidate)
        xtr, ytr, xte, yte = self.data(seed, config["ratio"])
        binary = _is_binary(entry)
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

        def loss(idx, step):
            tgt = ytr[idx].float() if binary else ytr[idx]
            return bind_call(entry.fn, {"logits": forward(xtr[idx]), "target": tgt}, opts)

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


# ------------------------------------------------------------------------------------ distillation
@functools.lru_cache(maxsize=16)
def _teacher(seed: int, hidden: int, epochs: int):
    """A teacher MLP trained with cross-entropy on the digits train split (cached per process)."""
    import losskit

    x, y = T.load("digits")
    xtr, ytr, xte, yte = T.split(x, y, seed)
    teacher = T.mlp(xtr.shape[1], hidden, 10, 1000 + seed)
    T.train(teacher, lambda idx, step: losskit.cross_entropy(teacher(xtr[idx]), ytr[idx]), len(ytr),
            epochs=epochs, lr=3e-3, batch_size=64, seed=seed)
    with torch.no_grad():
        return teacher(xtr).detach(), teacher(xte).detach()


class Distillation(Task):
    """A teacher MLP distilled into a much smaller student on digits."""

    name = "distillation"
    description = ("digits: teacher MLP (hidden `teacher_hidden`) trained with cross-entropy, distilled into a "
                   "student MLP (hidden `student_hidden`) trained on `labeled` of the training split; "
                   "metrics: student test accuracy, top-1 agreement with the teacher")
    metrics = ("accuracy", "agreement")
    baseline = "cross_entropy"
    defaults = {"teacher_hidden": 256, "teacher_epochs": 40, "student_hidden": 8, "epochs": 60,
                "lr": 3e-3, "batch_size": 64, "eval_every": 5, "temperature": 4.0}
    quick_config = {"teacher_epochs": 20, "epochs": 30, "batch_size": 128, "eval_every": 3}
    quick = ("cross_entropy", "kd_loss(divergence=forward)", "kd_loss(divergence=reverse)",
             "kd_loss(divergence=js)", "bd_kd", "dho_loss")

    def candidates(self):
        return [
            Candidate("cross_entropy"),
            *[Candidate("kd_loss", {"divergence": d}) for d in ("forward", "reverse", "js")],
            Candidate("bd_kd"),
            Candidate("dual_head_kd"),
            Candidate("dho_loss"),
            Candidate("ps_kd"),
        ]

    def run(self, candidate, seed, config):
        entry = _entry(candidate)
        x, y = T.load("digits")
        xtr, ytr, xte, yte = T.split(x, y, seed)
        t_tr, t_te = _teacher(seed, config["teacher_hidden"], config["teacher_epochs"])
        student = T.mlp(xtr.shape[1], config["student_hidden"], 10, seed)
        opts = dict(candidate.options)
        distil = entry.family == "distillation"
        if distil and "temperature" in _kwonly(entry.fn) and "temperature" not in opts:
            opts["temperature"] = config["temperature"]

        def loss(idx, step):
            logits = student(xtr[idx])
            inputs = {"student_logits": logits, "logits": logits, "teacher_logits": t_tr[idx],
                      "target": ytr[idx], "index": idx, "step": step}
            return bind_call(entry.fn, inputs, opts, aliases={"input": ["logits"]})

        curve = T.train(student, loss, len(ytr), epochs=config["epochs"], lr=config["lr"],
                        batch_size=config["batch_size"], seed=seed, eval_every=config["eval_every"],
                        evaluate=lambda: T.accuracy(student(xte), yte))
        with torch.no_grad():
            out = student(xte)
        return TrialResult({"accuracy": T.accuracy(out, yte),
                            "agreement": T.accuracy(out, t_te.argmax(-1))}, curve, "student test accuracy")


def _kwonly(fn) -> set[str]:
    import inspect

    return {p.name for p in inspect.signature(fn).parameters.values() if p.kind is p.KEYWORD_ONLY}


# ---------------------------------------------------------------------------------- representation
def _augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Digits-image augmentations: a random shift by up to one pixel, pixel dropout, Gaussian noise."""
    img = x.view(-1, 8, 8)
    dx, dy = (int(v) for v in torch.randint(-1, 2, (2,), generator=g))
    img = torch.roll(img, shifts=(dy, dx), dims=(1, 2))
    keep = (torch.rand(img.shape, generator=g) > 0.2).float()
    img = img * keep + 0.3 * torch.randn(img.shape, generator=g)
    return img.reshape(len(x), 64)


class Representation(Task):
    """Embeddings of digits learned from two augmented views; linear probe and recall@1."""

    name = "representation"
    description = ("digits, an MLP encoder trained on pairs of augmented views (shift, pixel dropout, noise); "
                   "metrics: linear-probe test accuracy on frozen embeddings, recall@1 (nearest test neighbour "
                   "has the same label). supcon and triplet use labels; the rest are self-supervised")
    metrics = ("probe_accuracy", "recall_at_1")
    baseline = "info_nce"
    defaults = {"dim": 32, "hidden": 128, "epochs": 40, "lr": 2e-3, "batch_size": 256, "eval_every": 10}
    quick_config = {"epochs": 20, "eval_every": 10}
    quick = ("info_nce", "supcon", "dcl", "barlow_twins", "vicreg", "triplet_margin")

    def candidates(self):
        return [Candidate(n) for n in ("info_nce", "nt_xent", "supcon", "cwcl", "dcl", "mv_infonce",
                                        "mv_dhel", "barlow_twins", "vicreg", "triplet_margin")]

    def run(self, candidate, seed, config):
        entry = _entry(candidate)
        x, y = T.load("digits")
        xtr, ytr, xte, yte = T.split(x, y, seed)
        enc = T.mlp(64, config["hidden"], config["dim"], seed)
        g = torch.Generator().manual_seed(40_000 + seed)
        opts = dict(candidate.options)

        def loss(idx, step):
            xb, yb = xtr[idx], ytr[idx]
            z1, z2 = enc(_augment(xb, g)), enc(_augment(xb, g))
            inputs = {"z1": z1, "z2": z2, "views": [z1, z2], "features": torch.stack([z1, z2], 1),
                      "labels": yb, "embeddings": torch.cat([z1, z2]), "x": z1, "y": z2}
            aliases = {"image_features": ["z1"], "text_features": ["z2"], "anchor": ["z1"], "positive": ["z2"],
                       "target": ["labels"]}
            if entry.name in ("triplet_margin",):
                inputs["labels"] = torch.cat([yb, yb])
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


# -------------------------------------------------------------------------------------- preference
def _nash(P: np.ndarray) -> np.ndarray:
    """The (maximin) Nash equilibrium of the symmetric zero-sum game with payoff ``P - 1/2`` (SciPy LP)."""
    from scipy.optimize import linprog

    k = len(P)
    A = P - 0.5
    # max v s.t. (A^T pi)_j >= v for all j, sum pi = 1, pi >= 0  ->  min -v
    c = np.r_[np.zeros(k), -1.0]
    a_ub = np.c_[-A.T, np.ones(k)]
    res = linprog(c, A_ub=a_ub, b_ub=np.zeros(k), A_eq=np.r_[np.ones(k), 0.0][None], b_eq=[1.0],
                  bounds=[(0, None)] * k + [(None, None)], method="highs")
    pi = np.clip(res.x[:k], 0, None)
    return pi / pi.sum()


class Preference(Task):
    """A K-armed bandit policy trained on pairwise preferences with a known ground truth."""

    name = "preference"
    description = ("bandit policy over `vocab` responses, reference policy fixed; preference pairs drawn from "
                   "the reference and labelled by a known Bradley-Terry model (`truth=bt`) or a non-transitive "
                   "cyclic preference (`truth=cyclic`); metrics: win rate vs the reference, KL(policy||ref), "
                   "total-variation distance to the known optimum (BT: pi_ref exp(r/beta) normalised; "
                   "cyclic: the game's Nash equilibrium)")
    metrics = ("win_rate", "kl_to_ref", "dist_to_opt")
    lower_is_better = frozenset({"kl_to_ref", "dist_to_opt"})
    baseline = "dpo"
    defaults = {"truth": "bt", "vocab": 16, "pairs": 2048, "epochs": 30, "lr": 0.05, "batch_size": 256,
                "beta": 0.5, "eval_every": 3}
    quick_config = {"epochs": 20, "eval_every": 2}
    quick = ("dpo", "ipo", "simpo", "kto", "orpo", "cpl")

    def candidates(self):
        return [Candidate(n) for n in ("dpo", "ipo", "simpo", "kto", "orpo", "d2o", "ddo", "cpl", "egpo",
                                        "nash_md")]

    def world(self, seed, config):
        k = config["vocab"]
        g = torch.Generator().manual_seed(50_000 + seed)
        ref_logits = 0.5 * torch.randn(k, generator=g, dtype=torch.float64)
        if config["truth"] == "bt":
            r = torch.randn(k, generator=g, dtype=torch.float64)
            P = torch.sigmoid(r[:, None] - r[None, :])
        elif config["truth"] == "cyclic":
            r = None
            P = torch.full((k, k), 0.5, dtype=torch.float64)
            for i in range(k):
                for s in range(1, (k - 1) // 2 + 1):  # i beats the next half of the circle
                    j = (i + s) % k
                    strength = 0.5 + 0.4 * (1.0 - (s - 1) / max((k - 1) // 2, 1))
                    P[i, j], P[j, i] = strength, 1 - strength
        else:
            raise ValueError(f"truth: expected 'bt' or 'cyclic', got {config['truth']!r}")
        ref = torch.softmax(ref_logits, 0)
        n = config["pairs"]
        a = torch.multinomial(ref, n, replacement=True, generator=g)
        b = torch.multinomial(ref, n, replacement=True, generator=g)
        a_wins = torch.rand(n, generator=g, dtype=torch.float64) < P[a, b]
        chosen, rejected = torch.where(a_wins, a, b), torch.where(a_wins, b, a)
        return ref_logits, r, P, chosen, rejected

    def run(self, candidate, seed, config):
        entry = _entry(candidate)
        ref_logits, r, P, chosen, rejected = self.world(seed, config)
        opts = dict(candidate.options)
        beta = float(opts.get("beta", config["beta"]))
        if "beta" in _kwonly(entry.fn):
            opts.setdefault("beta", beta)
        theta = torch.nn.Parameter(ref_logits.clone().float())
        ref_lp = torch.log_softmax(ref_logits.float(), 0).detach()
        if r is not None:
            opt_pi = torch.softmax(ref_logits + r / beta, 0)
        else:
            opt_pi = torch.tensor(_nash(P.numpy()))
        ref_pi = torch.softmax(ref_logits, 0)

        def measures():
            pi = torch.softmax(theta.detach().double(), 0)
            win = float(pi @ P @ ref_pi)
            kl = float((pi * (pi.log() - ref_pi.log())).sum())
            tv = float(0.5 * (pi - opt_pi).abs().sum())
            return {"win_rate": win, "kl_to_ref": kl, "dist_to_opt": tv}

        class _Policy(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.theta = theta

        model = _Policy()

        def loss(idx, step):
            lp = torch.log_softmax(model.theta, 0)
            c, rj = chosen[idx], rejected[idx]
            ones = torch.ones(len(idx))
            inputs = {"policy_chosen_logps": lp[c], "policy_rejected_logps": lp[rj],
                      "reference_chosen_logps": ref_lp[c], "reference_rejected_logps": ref_lp[rj],
                      "chosen_lengths": ones, "rejected_lengths": ones, "lengths": ones}
            return bind_call(entry.fn, inputs, opts, aliases=_PREF_ALIASES)

        curve = T.train(model, loss, len(chosen), epochs=config["epochs"], lr=config["lr"],
                        batch_size=config["batch_size"], seed=seed, eval_every=config["eval_every"],
                        evaluate=lambda: measures()["win_rate"])
        return TrialResult(measures(), curve, "win rate vs reference")


_PREF_ALIASES = {
    "chosen_logps": ["policy_chosen_logps"], "rejected_logps": ["policy_rejected_logps"],
    "policy_chosen": ["policy_chosen_logps"], "policy_rejected": ["policy_rejected_logps"],
    "ref_chosen_logps": ["reference_chosen_logps"], "ref_rejected_logps": ["reference_rejected_logps"],
    "reference_chosen": ["reference_chosen_logps"], "reference_rejected": ["reference_rejected_logps"],
    "pi_chosen": ["policy_chosen_logps"], "pi_rejected": ["policy_rejected_logps"],
    "ref_chosen": ["reference_chosen_logps"], "ref_rejected": ["reference_rejected_logps"],
}


# --------------------------------------------------------------------------------------- transport
class Transport(Task):
    """OT solvers on point clouds against the exact assignment (SciPy's Hungarian algorithm)."""

    name = "transport"
    description = ("two point clouds of `n` points in `dim` dimensions, squared-Euclidean cost, uniform "
                   "weights; the exact OT cost is an assignment problem solved by scipy's "
                   "linear_sum_assignment; metrics: relative error of the solver's cost, its median time")
    metrics = ("rel_error", "time_ms")
    lower_is_better = frozenset({"rel_error", "time_ms"})
    baseline = "exact_ot"
    defaults = {"n": 128, "dim": 2, "repeats": 3}
    quick_config = {"n": 64}
    quick = ("exact_ot", "sinkhorn", "sinkhorn_divergence", "sliced_wasserstein")

    def candidates(self):
        return [Candidate(n) for n in ("exact_ot", "sinkhorn", "sinkhorn_divergence", "sliced_wasserstein",
                                        "wasserstein_1d")]

    def run(self, candidate, seed, config):
        from scipy.optimize import linear_sum_assignment

        entry = _entry(candidate)
        g = torch.Generator().manual_seed(60_000 + seed)
        n, d = config["n"], config["dim"]
        x = torch.randn(n, d, generator=g, dtype=torch.float64)
        y = 0.5 * torch.randn(n, d, generator=g, dtype=torch.float64) + 1.0
        cost = torch.cdist(x, y) ** 2
        rows, cols = linear_sum_assignment(cost.numpy())
        exact = float(cost.numpy()[rows, cols].mean())
        if entry.name == "wasserstein_1d" and d != 1:
            raise Unavailable("wasserstein_1d needs dim=1")
        w = torch.full((n,), 1.0 / n, dtype=torch.float64)
        inputs = {"x": x, "y": y, "a": w, "b": w, "cost": cost, "C": cost, "u_values": x.squeeze(-1),
                  "v_values": y.squeeze(-1)}
        aliases = {"source": ["x"], "target": ["y"], "X": ["x"], "Y": ["y"], "cost_matrix": ["cost"]}
        times, value = [], None
        for _ in range(config["repeats"]):
            t0 = time.perf_counter()
            value = bind_call(entry.fn, inputs, dict(candidate.options), aliases=aliases)
            times.append(time.perf_counter() - t0)
        v = float(value.detach().double().mean()) if isinstance(value, torch.Tensor) else float(value)
        return TrialResult({"rel_error": abs(v - exact) / exact, "time_ms": 1000 * float(np.median(times))})


DEFAULT_SUITE: tuple[str, ...] = ("noisy_labels", "imbalanced", "distillation", "representation",
                                  "preference", "transport")

for _t in (NoisyLabels(), Imbalanced(), Distillation(), Representation(), Preference(), Transport()):
    register_task(_t)


def config_summary(cfg: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in cfg.items())
