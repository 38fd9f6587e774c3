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
