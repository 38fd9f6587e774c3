"""Pereira et al., "Hyperspherical embedding for novel class classification" (arXiv:2102.03243) is
normalized_softmax_loss with scale 10: a check against the authors' package.

Oracle: R-S-P-MODELS/pyopenset at commit 4b59747a827f11ab5507dda972db2b7dd48cb29e, ``pyopenset/functions.py``:
``ModuleNormalization(s=10)`` (``K.l2_normalize(x, axis=-1) * |s|``, placed before the last layer) and the
last ``Dense(..., kernel_constraint=min_max_norm(1, 1), bias_constraint=min_max_norm(0, 0),
activation='softmax')`` (unit-norm class columns, zero bias), trained with softmax cross-entropy; its
``AddNewClass`` appends the normalised mean embedding of a novel class as a new column (no training).
Ported in NumPy below.
"""

import numpy as np
import pytest
import torch

import losskit


def _keras_pipeline(x, kernel, y, s=10.0):
    z = x / np.sqrt(np.maximum((x * x).sum(-1, keepdims=True), 1e-12)) * abs(s)  # K.l2_normalize (eps 1e-12)
    w = kernel / np.linalg.norm(kernel, axis=0, keepdims=True)  # min_max_norm(1, 1): unit columns
    logits = z @ w + 0.0  # bias constrained to 0
    logits = logits - logits.max(-1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    return -logp[np.arange(len(y)), y].mean()


def _add_new_class(kernel, novel_embeddings):
    proto = novel_embeddings.mean(0)
    return np.concatenate([kernel, (proto / np.sqrt((proto ** 2).sum()))[:, None]], axis=1)


@pytest.mark.parametrize("seed", range(3))
def test_is_normalized_softmax_with_scale_10(seed):
    g = np.random.default_rng(seed)
    n, d, k = 32, 16, 7
    x, kernel, y = g.standard_normal((n, d)), g.standard_normal((d, k)), g.integers(0, k, n)
    got = losskit.normalized_softmax_loss(torch.tensor(x), torch.tensor(kernel.T), torch.tensor(y), scale=10.0)
    np.testing.assert_allclose(got.item(), _keras_pipeline(x, kernel, y), rtol=1e-12)


def test_novel_class_prototype_plugs_into_the_same_loss():
    # AddNewClass: the new column is the unit mean embedding; the loss of the extended model is the same
    # objective over K + 1 prototypes (what a user evaluates after adding a class)
    g = np.random.default_rng(4)
    d, k = 8, 4
    kernel = g.standard_normal((d, k))
    centre = 3 * g.standard_normal(d)
    novel = centre + 0.1 * g.standard_normal((20, d))
    ext = _add_new_class(kernel, novel)
    y = np.full(20, k)
    got = losskit.normalized_softmax_loss(torch.tensor(novel), torch.tensor(ext.T), torch.tensor(y), scale=10.0)
    np.testing.assert_allclose(got.item(), _keras_pipeline(novel, ext, y), rtol=1e-12)
    assert got.item() < np.log(k + 1)  # the novel samples are classified to their prototype
