"""The conformance suite must catch broken objectives: register some and expect the checks to fail."""

import pytest
import torch

import losskit
from losskit import objective
from losskit._core import reduce
from losskit._core.inputs import LOGITS_LABELS, logits_labels_example
from losskit._core.validate import check_sample_weight
from losskit.testing.conformance import CHECKS, check_conformance


class _WrongGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z):
        ctx.save_for_backward(z)
        return torch.logsumexp(z, -1)

    @staticmethod
    def backward(ctx, g):
        (z,) = ctx.saved_tensors
        return g[:, None] * torch.softmax(z, -1) * 1.1  # wrong by 10%


_KW = dict(family="test", input_kind=LOGITS_LABELS, example=logits_labels_example, formula="broken")


def _ce_terms(logits, target):
    return -torch.log_softmax(logits, -1).gather(-1, target[:, None]).squeeze(-1)


@pytest.fixture
def broken():
    names = []

    def make(name, fn, **kw):
        objective(name, **{**_KW, **kw})(fn)
        names.append(name)
        return losskit.get(name)

    yield make
    for n in names:
        losskit._core.unregister(n)


def test_wrong_gradient_is_caught(broken):
    def wrong_grad(logits, target, *, sample_weight=None, reduction="mean"):
        """Cross-entropy with a hand-written backward that is wrong by 10 percent; long enough docstring."""
        loss = _WrongGrad.apply(logits) - logits.gather(-1, target[:, None]).squeeze(-1)
        return reduce(loss, reduction, weight=sample_weight)

    entry = broken("broken_wrong_grad", wrong_grad)
    with pytest.raises(AssertionError, match="gradcheck"):
        CHECKS["gradcheck"](entry)
    # and the same objective passes the checks that do not look at gradients
    CHECKS["reductions"](entry)


def test_inconsistent_reduction_is_caught(broken):
    def bad_mean(logits, target, *, sample_weight=None, reduction="mean"):
        """Cross-entropy whose 'mean' divides by N - 1: inconsistent with 'none'. Long docstring."""
        loss = _ce_terms(logits, target)
        if reduction == "mean":
            return loss.sum() / (loss.numel() - 1)
        return reduce(loss, reduction, weight=sample_weight)

    entry = broken("broken_reduction", bad_mean)
    with pytest.raises(AssertionError, match="mean vs none.mean"):
        CHECKS["reductions"](entry)


def test_silent_nan_is_caught(broken):
    def log_of_softmax(logits, target, *, sample_weight=None, reduction="mean"):
        """Cross-entropy computed as log(softmax(z)): overflows to inf/NaN at extreme logits."""
        p = torch.exp(logits) / torch.exp(logits).sum(-1, keepdim=True)
        loss = -torch.log(p.gather(-1, target[:, None]).squeeze(-1))
        return reduce(loss, reduction, weight=sample_weight)

    entry = broken("broken_nan", log_of_softmax)
    with pytest.raises(AssertionError, match="non-finite"):
        CHECKS["extreme"](entry)


def test_unchecked_labels_are_caught(broken):
    def no_label_check(logits, target, *, sample_weight=None, reduction="mean"):
        """Cross-entropy that lets gather raise its own RuntimeError on out-of-range labels."""
        loss = _ce_terms(logits, target)
        return reduce(loss, reduction, weight=check_sample_weight(sample_weight, loss.shape))

    entry = broken("broken_labels", no_label_check)
    with pytest.raises(AssertionError, match="expected LossInputError naming 'target'|no error raised"):
        CHECKS["bad_inputs"](entry)


def test_batch_coupling_is_caught(broken):
    def coupled(logits, target, *, sample_weight=None, reduction="mean"):
        """Claims to be per-sample but normalises the logits by a batch statistic."""
        z = logits - logits.mean(0, keepdim=True)
        return reduce(_ce_terms(z, target), reduction, weight=sample_weight)

    entry = broken("broken_coupled", coupled)
    with pytest.raises(AssertionError, match="batch split"):
        CHECKS["batch_split"](entry)


def test_missing_example_is_caught(broken):
    def fine(logits, target, *, sample_weight=None, reduction="mean"):
        """Plain cross-entropy, registered without an example-input generator."""
        return reduce(_ce_terms(logits, target), reduction, weight=sample_weight)

    entry = broken("broken_no_example", fine, example=None)
    report = check_conformance(entry, ["example"])
    assert report["example"].startswith("FAIL") and "example-input generator" in report["example"]


def test_half_precision_returning_half_is_caught(broken):
    def half_out(logits, target, *, sample_weight=None, reduction="mean"):
        """Cross-entropy that returns the loss in the input's dtype, against the float32 policy."""
        loss = reduce(_ce_terms(logits, target), reduction, weight=sample_weight)
        return loss.to(torch.float16) if logits.dtype == torch.float32 else loss

    entry = broken("broken_half", half_out)
    with pytest.raises(AssertionError):
        CHECKS["float16"](entry)


def test_a_correct_objective_passes_everything():
    report = check_conformance(losskit.get("cross_entropy"))
    # label_grad does not apply: the example's only floating input (the logits) is differentiated already;
    # values does not apply: cross-entropy declares no bounded value domain (its logits are checked by rows)
    assert report.pop("label_grad").startswith("skip:")
    assert report.pop("values").startswith("skip:")
    assert all(v == "ok" for v in report.values()), report
