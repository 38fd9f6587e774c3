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


class _Student(torch.nn.Module):
    """A small MLP with a second head on the same hidden layer (used by the dual-head objectives)."""

    def __init__(self, d_in, hidden, k, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.body = torch.nn.Sequential(torch.nn.Linear(d_in, hidden), torch.nn.ReLU())
        self.head = torch.nn.Linear(hidden, k)
        self.aux = torch.nn.Linear(hidden, k)

    def forward(self, x):
        h = self.body(x)
        return self.head(h), self.aux(h)


class Distillation(Task):
    """A teacher MLP distilled into a much smaller student on digits."""

    name = "distillation"
    description = ("digits: teacher MLP (hidden `teacher_hidden`) trained with cross-entropy, distilled into a "
                   "student MLP (hidden `student_hidden`); dual_head_kd / dho_loss train a second student head "
                   "(DHO predicts with dho_predict's mix of both heads); ps_kd is self-distillation from the "
                   "student's own previous-epoch predictions (alpha_t = 0.8 t / T), no teacher; "
                   "metrics: student test accuracy, top-1 agreement with the teacher")
    metrics = ("accuracy", "agreement")
    baseline = "cross_entropy"
    defaults = {"teacher_hidden": 256, "teacher_epochs": 40, "student_hidden": 8, "epochs": 60,
                "lr": 3e-3, "batch_size": 64, "eval_every": 5, "temperature": 4.0}
    quick_config = {"teacher_epochs": 20, "epochs": 30, "batch_size": 128, "eval_every": 3}
    quick = ("cross_entropy", "kd_loss(divergence=forward)", "kd_loss(divergence=reverse)",
             "kd_loss(divergence=js)", "bd_kd", "dho_loss", "ps_kd")

    def candidates(self):
        return [
            Candidate("cross_entropy"),
            *[Candidate("kd_loss", {"divergence": d}) for d in ("forward", "reverse", "js")],
            Candidate("bd_kd"),
            Candidate("dual_head_kd"),
            Candidate("dho_loss"),
            Candidate("ps_kd"),
            Candidate("sinkhorn_kd"),
        ]

    def run(self, candidate, seed, config):
        entry = _entry(candidate)
        x, y = T.load("digits")
        xtr, ytr, xte, yte = T.split(x, y, seed)
        t_tr, t_te = _teacher(seed, config["teacher_hidden"], config["teacher_epochs"])
        student = _Student(xtr.shape[1], config["student_hidden"], 10, seed)
        opts = dict(candidate.options)
        if entry.family == "distillation" and "temperature" in _kwonly(entry.fn) and "temperature" not in opts:
            opts["temperature"] = config["temperature"]
        self_kd = entry.name == "ps_kd"
        memory = torch.zeros(len(ytr), 10)  # PS-KD: each sample's prediction from the previous epoch
        steps_per_epoch = -(-len(ytr) // config["batch_size"])

        def loss(idx, step):
            logits, aux = student(xtr[idx])
            teacher = t_tr[idx]
            if self_kd:
                epoch = step // steps_per_epoch
                teacher = memory[idx]
                opts["alpha"] = candidate.options.get("alpha", 0.8) * epoch / config["epochs"]
                memory[idx] = logits.detach()
            inputs = {"student_logits": logits, "logits": logits, "teacher_logits": teacher,
                      "student_aux_logits": aux, "student_kd_logits": aux, "target": ytr[idx]}
            return bind_call(entry.fn, inputs, opts, aliases={"input": ["logits"]})

        def predict(xs):
            h1, h2 = student(xs)
            if entry.name == "dho_loss":
                import losskit

                mix = getattr(losskit, "dho_predict", None)
                if mix is not None:
                    return mix(h1, h2)
            return h1

        curve = T.train(student, loss, len(ytr), epochs=config["epochs"], lr=config["lr"],
                        batch_size=config["batch_size"], seed=seed, eval_every=config["eval_every"],
                        evaluate=lambda: T.accuracy(predict(xte), yte))
        with torch.no_grad():
            out = predict(xte)
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
    quick = ("info_nce", "nt_xent", "supcon", "dcl", "barlow_twins", "vicreg", "triplet_margin")
    #: Candidates that see the labels (supervised); the others get only the two views.
    supervised = frozenset({"supcon", "triplet_margin"})

    def candidates(self):
        return [*[Candidate(n) for n in ("info_nce", "nt_xent", "supcon", "cwcl", "dcl", "mv_infonce",
                                          "mv_dhel", "barlow_twins", "vicreg")],
                # batch-hard mining, cosine distance: "all" builds an (n, n, n) tensor (512^3 floats here) and the
                # Euclidean distance an (n, n, D) one
                Candidate("triplet_margin", {"mining": "batch_hard", "distance": "cosine"}, label="triplet_margin")]

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
                      "embeddings": torch.cat([z1, z2])}
            if entry.name in self.supervised:
                inputs["labels"] = torch.cat([yb, yb]) if entry.name == "triplet_margin" else yb
            aliases = {"p": ["z1"], "q": ["z2"], "image_features": ["z1"], "text_features": ["z2"]}
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


def _regularised_nash(P: np.ndarray, ref: np.ndarray, beta: float, iters: int = 20_000,
                      tol: float = 1e-12) -> np.ndarray:
    """The symmetric equilibrium of the KL-regularised preference game
    ``max_pi min_pi' pi^T P pi' - beta KL(pi || ref) + beta KL(pi' || ref)``: the fixed point
    ``pi = ref exp(P pi / beta) / Z``, found by damped multiplicative (mirror-descent) iteration.
    Online IPO / EGPO / Nash-MP target it (Munos et al. 2023, arXiv:2312.00886)."""
    log_ref = np.log(ref)
    pi = ref.copy()
    eta = min(1.0, beta)  # damping: the map is (1/beta)-Lipschitz in the log domain
    for _ in range(iters):
        logits = log_ref + (P @ pi) / beta
        target = np.exp(logits - logits.max())
        target /= target.sum()
        new = np.exp((1 - eta) * np.log(pi) + eta * np.log(target))
        new /= new.sum()
        if np.abs(new - pi).sum() < tol:
            return new
        pi = new
    return pi


def _nash_claim(boards):
    return better_than_baseline(
        boards, task="preference", where={}, contenders=("egpo", "nash_mp"), reference="dpo", metric="dist_to_nash",
        statement="Nash-learning objectives (EGPO, Nash-MP) end closer to the beta-regularised Nash equilibrium "
                  "of the preference game than DPO",
        source="Zhou et al. 2025, EGPO (arXiv:2503.08942); Tiapkin et al. 2025, Nash-MP (arXiv:2505.19731); "
               "Munos et al. 2023, Nash learning from human feedback (arXiv:2312.00886)")


class Preference(Task):
    """A K-armed bandit policy trained on pairwise preferences with a known ground truth."""

    name = "preference"
    description = ("bandit policy over `vocab` responses, reference policy fixed; preference pairs drawn from "
                   "the reference and labelled by a known Bradley-Terry model (`truth=bt`) or a non-transitive "
                   "cyclic preference (`truth=cyclic`); metrics: win rate vs the reference, KL(policy||ref), "
                   "total-variation distance to the known optimum (BT: pi_ref exp(r/beta) normalised; "
                   "cyclic: the game's Nash equilibrium), and to the beta-regularised Nash equilibrium "
                   "of the preference game (pi = pi_ref exp(P pi / beta) / Z, what online IPO, EGPO and "
                   "Nash-MP target). Every head gets the task's beta. KTO sees chosen as "
                   "desirable and rejected as undesirable; EGPO's opponent is the current policy (exact "
                   "expectations, plain gradient steps); Nash-MP samples from the policy, previous iterate "
                   "refreshed every epoch")
    metrics = ("win_rate", "kl_to_ref", "dist_to_opt", "dist_to_nash")
    lower_is_better = frozenset({"kl_to_ref", "dist_to_opt", "dist_to_nash"})
    baseline = "dpo"
    claims = (_nash_claim,)
    defaults = {"truth": "bt", "vocab": 16, "pairs": 2048, "epochs": 30, "lr": 0.05, "batch_size": 256,
                "beta": 0.5, "eval_every": 3}
    quick_config = {"epochs": 20, "eval_every": 2}
    quick_sweep = {"truth": ["bt", "cyclic"]}
    quick = ("dpo", "ipo", "simpo", "kto", "orpo", "cpl", "egpo", "nash_mp")

    def candidates(self):
        return [Candidate(n) for n in ("dpo", "ipo", "simpo", "kto", "orpo", "d2o", "ddo", "cpl", "egpo",
                                        "nash_mp")]

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
        reg_nash = torch.tensor(_regularised_nash(P.numpy(), ref_pi.numpy(), beta))

        def measures():
            pi = torch.softmax(theta.detach().double(), 0)
            win = float(pi @ P @ ref_pi)
            kl = float((pi * (pi.log() - ref_pi.log())).sum())
            tv = float(0.5 * (pi - opt_pi).abs().sum())
            tv_nash = float(0.5 * (pi - reg_nash).abs().sum())
            return {"win_rate": win, "kl_to_ref": kl, "dist_to_opt": tv, "dist_to_nash": tv_nash}

        class _Policy(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.theta = theta

        model = _Policy()
        Pf = P.float()
        gen = torch.Generator().manual_seed(80_000 + seed)
        steps_per_epoch = -(-len(chosen) // config["batch_size"])
        prev = {"lp": ref_lp.clone()}  # Nash-MP's previous iterate, refreshed every epoch
        # reference-free heads (SimPO, ORPO, CPL, ...) take no reference scores: their own example says so
        try:
            uses_ref = "ref_chosen_logps" in entry.make_example().inputs
        except Exception:  # noqa: BLE001  (no example generator: assume the conventional signature)
            uses_ref = True

        def loss(idx, step):
            lp = torch.log_softmax(model.theta, 0)
            c, rj = chosen[idx], rejected[idx]
            ones = torch.ones(len(idx))
            pi_now = lp.detach().exp()
            inputs = {"policy_chosen_logps": lp[c], "policy_rejected_logps": lp[rj],
                      **({"ref_chosen_logps": ref_lp[c], "ref_rejected_logps": ref_lp[rj]} if uses_ref else {}),
                      "chosen_lengths": ones, "rejected_lengths": ones, "lengths": ones,
                      # EGPO: P(y > y'') against the current policy as opponent (exact expectation)
                      "chosen_preference": (Pf @ pi_now)[c], "rejected_preference": (Pf @ pi_now)[rj]}
            if entry.input_kind.name == "unpaired scores":  # KTO: chosen are desirable, rejected not
                inputs.update(policy_logps=torch.cat([lp[c], lp[rj]]), ref_logps=torch.cat([ref_lp[c], ref_lp[rj]]),
                              desirable=torch.cat([torch.ones(len(idx), dtype=torch.bool),
                                                   torch.zeros(len(idx), dtype=torch.bool)]))
            elif entry.input_kind.name == "on-policy samples":  # Nash-MP: samples from the policy itself
                if step % steps_per_epoch == 0:
                    prev["lp"] = lp.detach().clone()
                ys = torch.multinomial(pi_now, len(idx), replacement=True, generator=gen)
                inputs.update(policy_logps=lp[ys], ref_logps=ref_lp[ys], prev_logps=prev["lp"][ys],
                              preference=(Pf @ pi_now)[ys])
            return bind_call(entry.fn, inputs, opts, aliases=_PREF_ALIASES)

        curve = T.train(model, loss, len(chosen), epochs=config["epochs"], lr=config["lr"],
                        batch_size=config["batch_size"], seed=seed, eval_every=config["eval_every"],
                        evaluate=lambda: measures()["win_rate"])
        return TrialResult(measures(), curve, "win rate vs reference")


_PREF_ALIASES = {
    "chosen_logps": ["policy_chosen_logps"], "rejected_logps": ["policy_rejected_logps"],
    "reference_chosen_logps": ["ref_chosen_logps"], "reference_rejected_logps": ["ref_rejected_logps"],
}


# --------------------------------------------------------------------------------------- transport
class Transport(Task):
    """OT solvers on point clouds against the exact assignment (SciPy's Hungarian algorithm)."""

    name = "transport"
    description = ("two point clouds of `n` points in `dim` dimensions, squared-Euclidean cost, uniform "
                   "weights; the exact OT cost is an assignment problem solved by scipy's "
                   "linear_sum_assignment; metrics: relative error of the solver's cost against it (entropic "
                   "costs carry their eps bias, the quadratically regularised one its gamma bias; the sliced "
                   "distance is a different quantity, a lower bound), median time over `repeats` calls")
    metrics = ("rel_error", "time_ms")
    lower_is_better = frozenset({"rel_error", "time_ms"})
    baseline = "exact_ot"
    defaults = {"n": 128, "dim": 2, "repeats": 3}
    quick_config = {"n": 64}
    quick = ("exact_ot", "sinkhorn", "sinkhorn(eps=0.005)", "sinkhorn_divergence", "sliced_wasserstein",
             "quadratic_ot(gamma=0.1)")

    def candidates(self):
        return [Candidate("exact_ot"), Candidate("sinkhorn"), Candidate("sinkhorn", {"eps": 0.005}),
                Candidate("sinkhorn_divergence"), Candidate("sliced_wasserstein"), Candidate("wasserstein_1d"),
                Candidate("quadratic_ot", {"gamma": 0.1})]

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
        one_d = entry.name == "wasserstein_1d"
        inputs = {"x": x.squeeze(-1) if one_d else x, "y": y.squeeze(-1) if one_d else y, "a": w, "b": w,
                  "cost": cost, "C": cost, "u_values": x.squeeze(-1), "v_values": y.squeeze(-1)}
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
