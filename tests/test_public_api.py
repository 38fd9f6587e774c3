"""The public surface a newcomer meets: Module signatures and docstrings, public registration."""

import inspect

import pytest
import torch

import losskit


@pytest.mark.parametrize("entry", losskit.objectives(), ids=lambda e: e.name)
def test_module_has_the_functionals_signature_and_doc(entry):
    cls = entry.module
    fn_params = inspect.signature(entry.fn).parameters
    options = [p for p in fn_params.values() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    sig = inspect.signature(cls)
    assert list(sig.parameters.values()) == options, entry.name  # names, defaults, annotations, keyword-only
    fwd = inspect.signature(cls.forward).parameters
    inputs = [p.name for p in fn_params.values() if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    assert list(fwd)[1:-1] == inputs and list(fwd)[-1] == "overrides"
    assert inspect.getdoc(entry.fn) in inspect.getdoc(cls)
    assert cls.__qualname__ == cls.__name__ and getattr(losskit, cls.__name__) is cls


def test_help_shows_the_options():
    import pydoc

    text = pydoc.render_doc(losskit.FocalLoss, renderer=pydoc.plaintext)
    assert "FocalLoss(*, gamma: 'float' = 2.0" in text and "Focal Loss for Dense Object Detection" in text
    m = losskit.FocalLoss(gamma=1.0)
    logits, target = torch.randn(4, 3), torch.tensor([0, 2, 1, 0])
    torch.testing.assert_close(m(logits, target), losskit.focal(logits, target, gamma=1.0))
    with pytest.raises(TypeError, match="unexpected options"):
        losskit.FocalLoss(gama=1.0)


# ------------------------------------------------------------------------------------ public registration
def _mc(logits, target, *, margin: float = 1.0):
    """Multi-class hinge (Crammer-Singer) per sample: ``max(0, margin + max_{k != y} z_k - z_y)``."""
    zy = logits.gather(1, target[:, None])[:, 0]
    other = logits.scatter(1, target[:, None], float("-inf")).amax(1)
    return torch.relu(margin + other - zy)


def _bin(logits, target):
    """Logistic loss per element: ``softplus(z) - t z`` (binary cross-entropy with logits)."""
    return torch.nn.functional.softplus(logits) - target * logits


def _pair(z1, z2, *, temperature: float = 0.5):
    """InfoNCE per anchor: ``-log softmax(z1 z2^T / tau)_ii`` (batch-coupled)."""
    s = z1 @ z2.T / temperature
    return -torch.log_softmax(s, 1).diagonal()


def _pref(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, *, beta: float = 0.1):
    """DPO per pair: ``-log sigmoid(beta (pi_c - ref_c - pi_r + ref_r))``."""
    m = (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)
    return -torch.nn.functional.logsigmoid(beta * m)


@pytest.fixture
def scratch():
    names = []
    yield names
    for n in names:
        losskit.unregister(n)


CASES = [
    ("multiclass", _mc, {"margin": losskit.extend.POSITIVE}, False),
    ("binary", _bin, {}, False),
    ("embedding pair", _pair, {"temperature": losskit.extend.POSITIVE}, True),
    ("preference pair", _pref, {"beta": losskit.extend.POSITIVE}, False),
]


@pytest.mark.parametrize("inputs,fn,options,coupled", CASES, ids=[c[0] for c in CASES])
def test_register_each_public_kind_passes_conformance(scratch, inputs, fn, options, coupled):
    from losskit.testing import CHECKS, check_conformance

    name = f"user_{inputs.replace(' ', '_')}"
    scratch.append(name)
    f = losskit.register(name, inputs=inputs, formula="see the docstring", options=options,
                         batch_coupled=coupled)(fn)
    entry = losskit.get(name)
    assert entry.family == "custom" and f is entry.fn and name in losskit.list(family="custom")
    assert list(inspect.signature(f).parameters)[-2:] == ["sample_weight", "reduction"]
    results = check_conformance(entry, [c for c in CHECKS if c != "compile"])
    failed = {k: v for k, v in results.items() if v.startswith("FAIL")}
    assert not failed, failed
    # the value is the user's per-sample losses, reduced by losskit (the mean of an independent recomputation)
    ex = entry.make_example(torch.float64)
    per = fn(**ex.inputs)
    torch.testing.assert_close(f(**ex.inputs), per.mean())
    w = torch.rand(per.shape[0], dtype=torch.float64)
    torch.testing.assert_close(f(**ex.inputs, sample_weight=w, reduction="sum"), (w * per).sum())


def test_register_refuses_what_it_cannot_check(scratch):
    with pytest.raises(ValueError, match="inputs: expected one of 'multiclass'"):
        losskit.register("x", inputs="images", formula="-")
    with pytest.raises(ValueError, match=r"needs the parameters \(logits, target\)"):
        losskit.register("x", inputs="multiclass", formula="-")(lambda z, y: z)
    with pytest.raises(ValueError, match=r"declare the domain of every option.*\['margin'\]"):
        losskit.register("x", inputs="multiclass", formula="-")(_mc)
    with pytest.raises(ValueError, match="losskit adds sample_weight and reduction"):
        losskit.register("x", inputs="binary", formula="-")(lambda logits, target, *, reduction="mean": logits)
    assert "x" not in losskit.list()


def test_registered_multiclass_validates_inputs(scratch):
    scratch.append("user_mc")
    f = losskit.register("user_mc", inputs="multiclass", formula="-", options={"margin": losskit.extend.POSITIVE})(_mc)
    z = torch.randn(4, 3)
    with pytest.raises(losskit.LossInputError, match=r"target: expected class indices in \[0, 3\)"):
        f(z, torch.tensor([0, 1, 2, 3]))
    with pytest.raises(losskit.LossInputError, match="margin"):
        f(z, torch.tensor([0, 1, 2, 0]), margin=-1.0)


def test_registered_preference_pair_points_to_sequence_scores(scratch):
    scratch.append("user_pref")
    f = losskit.register("user_pref", inputs="preference pair", formula="-",
                         options={"beta": losskit.extend.POSITIVE})(_pref)
    tok = -torch.rand(4, 7)
    with pytest.raises(losskit.LossInputError, match="sequence_scores"):
        f(tok, tok, tok, tok)
