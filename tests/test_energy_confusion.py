"""energy_confusion against a NumPy port of the authors' Caffe layer.

Oracle: chenbinghui1/ECAML at commit decf0480e3d030e07e1d00f9cda332c0e0af101e, ``src/energy_confusion.cpp``
(``EnergyConfusionLossLayer::Forward_cpu`` / ``Backward_cpu``), ported loop by loop below. The layer's
random pair selection (``flag_``) is drawn here the same way and passed to losskit as ``pair_mask``. The
forward writes E; the backward scales dE/df by ``top_diff / E``, i.e. the gradient of log E, which is
what losskit returns (value log E, gradient compared with the layer's ``bottom_diff`` for top_diff = 1).
"""

import numpy as np
import pytest
import torch

import losskit


def _flags(num, random_num, rng):
    flag = np.zeros((num, num), dtype=int)
    for i in range(num):
        if i < num - random_num * 2:
            place = list(range(num))
            tail = place[i + 2:]
            rng.shuffle(tail)
            place[i + 2:] = tail
            for j in range(random_num):
                flag[i, place[i + 2 + j]] = 1
    return flag


def _caffe(data, label, flag):
    num, channels = data.shape
    w_pos = w_neg = 0
    for i in range(num):
        for j in range(i + 1, num):
            if label[i] == label[j]:
                w_pos += 1
            else:
                w_neg += 1
    top = 0.0
    diff = np.zeros_like(data)
    for i in range(num):
        for j in range(i + 1, num):
            if flag[i, j] == 1:
                w = w_pos if label[i] == label[j] else w_neg
                c = data[i] - data[j]
                top += np.dot(c, c) * 0.5 / w
                diff[i] += c / w
                diff[j] -= c / w
    return top, diff / top  # Backward_cpu: top_diff / top * diff_


def _batch(seed, classes=13, per=2, d=16):
    rng = np.random.default_rng(seed)
    label = np.repeat(np.arange(classes), per)  # the paper's 65 x 2 layout, shrunk
    data = rng.standard_normal((classes * per, d)) + 0.5 * rng.standard_normal((classes, d))[label]
    return data, label, rng


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("shuffle_labels", [False, True])
def test_matches_caffe_layer_with_its_pair_sampling(seed, shuffle_labels):
    data, label, rng = _batch(seed)
    if shuffle_labels:  # same-class pairs then enter the random subset too (weighted by w_pos)
        label = rng.permutation(label)
    flag = _flags(len(label), 3, rng)
    energy, grad = _caffe(data, label, flag)
    x = torch.tensor(data, requires_grad=True)
    out = losskit.energy_confusion(x, torch.tensor(label), pair_mask=torch.tensor(flag, dtype=torch.bool))
    out.backward()
    np.testing.assert_allclose(out.item(), np.log(energy), rtol=1e-13)
    np.testing.assert_allclose(x.grad.numpy(), grad, rtol=1e-11, atol=1e-14)


def test_default_is_every_negative_pair_and_closed_form():
    data, label, _ = _batch(9, classes=5, per=3, d=4)
    x = torch.tensor(data)
    neg = label[:, None] != label[None, :]
    flag = np.triu(neg, 1).astype(int)
    energy, _ = _caffe(data, label, flag)
    got = losskit.energy_confusion(x, torch.tensor(label))
    np.testing.assert_allclose(got.item(), np.log(energy), rtol=1e-13)
    # closed form: E = half the mean squared distance over different-class pairs
    iu = np.triu_indices(len(label), 1)
    d2 = ((data[:, None] - data[None]) ** 2).sum(-1)[iu]
    np.testing.assert_allclose(got.item(), np.log(0.5 * d2[neg[iu]].mean()), rtol=1e-13)
    assert torch.equal(losskit.EnergyConfusionLoss()(x, torch.tensor(label)), got)


def test_minimising_pulls_classes_together():
    data, label, _ = _batch(3)
    x = torch.tensor(data, requires_grad=True)
    y = torch.tensor(label)
    before = losskit.energy_confusion(x, y)
    before.backward()
    with torch.no_grad():
        x2 = x - 0.1 * x.grad
    assert losskit.energy_confusion(x2, y) < before
    # scale invariance of the gradient direction (log E): scaling the embeddings shifts the loss by 2 log c
    c = 3.0
    torch.testing.assert_close(losskit.energy_confusion(c * x.detach(), y), before.detach() + 2 * np.log(c))


def test_single_class_raises():
    with pytest.raises(losskit.LossInputError, match="labels"):
        losskit.energy_confusion(torch.randn(4, 3), torch.zeros(4, dtype=torch.long))
