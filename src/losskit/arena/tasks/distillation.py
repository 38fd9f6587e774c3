"""The ``distillation`` task: a teacher MLP distilled into a much smaller student on digits."""

from __future__ import annotations

import functools
import inspect

import torch

from .. import _train as T
from ..task import Candidate, Task, TrialResult, bind_call
from ._common import entry_of, kwonly, option_default

__all__ = ["Distillation"]


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


def _self_distillation(entry) -> bool:
    """Is the objective's "teacher" the student's own earlier prediction (progressive self-distillation)?

    A rule over registry metadata, not a name: the objective cannot run without the labels (its ``target``
    has no default: it mixes them into its soft target) and its example does not differentiate
    ``teacher_logits`` (it detaches them: a fixed target, not a model being trained alongside). Of the
    registered objectives only ps_kd is both (kd_loss, bd_kd, dual_head_kd and dho_loss differentiate
    the teacher; sinkhorn_kd's labels are optional). Such an objective is fed each sample's student
    logits from the previous epoch and ``alpha`` ramped from 0 to its value (its default unless given).
    A family-side registry tag would say this directly; the arena reads what the entry already has.
    """
    params = inspect.signature(entry.fn).parameters
    if "teacher_logits" not in params or "target" not in params:
        return False
    if params["target"].default is not inspect.Parameter.empty or "alpha" not in kwonly(entry.fn):
        return False
    try:
        grad = entry.make_example().grad
    except Exception:  # noqa: BLE001  (no example generator: not recognisable as self-distillation)
        return False
    return "teacher_logits" not in grad


def _mixes_heads(entry) -> bool:
    """Does the objective train a separate KD head that prediction mixes in (DHO)?

    Read from the input roles: an objective with a ``student_kd_logits`` input trains the second head as
    a KD head and predicts with :func:`losskit.dho_predict`'s mix of both heads (dual_head_kd's
    ``student_aux_logits`` head is auxiliary only: it predicts with the first head).
    """
    return "student_kd_logits" in inspect.signature(entry.fn).parameters


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

    def split(self, seed, config):
        """The split of one seed and the teacher's logits on it (a subclass brings its own data / teacher)."""
        x, y = T.load("digits")
        xtr, ytr, xte, yte = T.split(x, y, seed)
        t_tr, t_te = _teacher(seed, config["teacher_hidden"], config["teacher_epochs"])
        return xtr, ytr, xte, yte, t_tr, t_te

    def run(self, candidate, seed, config):
        entry = entry_of(candidate)
        xtr, ytr, xte, yte, t_tr, t_te = self.split(seed, config)
        k = t_tr.shape[1]
        student = _Student(xtr.shape[1], config["student_hidden"], k, seed)
        opts = dict(candidate.options)
        if entry.family == "distillation" and "temperature" in kwonly(entry.fn) and "temperature" not in opts:
            opts["temperature"] = config["temperature"]
        self_kd = _self_distillation(entry)
        alpha_final = candidate.options.get("alpha", option_default(entry.fn, "alpha")) if self_kd else None
        mix_heads = _mixes_heads(entry)
        memory = torch.zeros(len(ytr), k)  # self-distillation: each sample's prediction from the previous epoch
        steps_per_epoch = -(-len(ytr) // config["batch_size"])

        def loss(idx, step):
            logits, aux = student(xtr[idx])
            teacher = t_tr[idx]
            if self_kd:
                epoch = step // steps_per_epoch
                teacher = memory[idx]
                opts["alpha"] = alpha_final * epoch / config["epochs"]
                memory[idx] = logits.detach()
            inputs = {"student_logits": logits, "logits": logits, "teacher_logits": teacher,
                      "student_aux_logits": aux, "student_kd_logits": aux, "target": ytr[idx]}
            return bind_call(entry.fn, inputs, opts, aliases={"input": ["logits"]})

        def predict(xs):
            h1, h2 = student(xs)
            if mix_heads:
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
