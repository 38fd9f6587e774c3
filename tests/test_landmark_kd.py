"""landmark_kd_loss against a NumPy port of the authors' TensorFlow KD-Loss.

Oracle: aliprf/KD-Loss, ``custom_Losses.py`` ``Custom_losses.kd_loss`` at commit
5a8111654d338d87c01d05acdd028444b445fbf0 (same text at ed02d49), with the weights of ``student_train.py``
(alpha_tough=1.9, alpha_mi_tough=-0.45, alpha_tol=1.8, alpha_mi_tol=-0.4) and ``main.py`` (main 2, teachers 1).
``tf.sign``/``tf.where``/``tf.reduce_mean`` are ``np.sign``/``np.where``/``np.mean``.
"""

import numpy as np
import pytest
import torch

import losskit


def _official(x_pr, x_gt, x_tough, x_tol, alpha_tough=1.9, alpha_mi_tough=-0.45, alpha_tol=1.8,
              alpha_mi_tol=-0.4, main_loss_weight=2.0, tough_loss_weight=1.0, tol_loss_weight=1.0):
    x_tough = x_gt + np.sign(x_pr - x_gt) * np.abs(x_tough - x_gt)
    b_tough = x_gt + np.sign(x_pr - x_gt) * np.abs(x_tough - x_gt) * 0.15
    x_tol = x_gt + np.sign(x_pr - x_gt) * np.abs(x_tol - x_gt)
    b_tol = x_gt + np.sign(x_pr - x_gt) * np.abs(x_tol - x_gt) * 0.15
    tou_pos_map = np.where(np.sign(x_pr - x_tough) * np.sign(x_tough - x_gt) > 0, alpha_tough, 0.0)
    tou_neg_map = np.where(np.sign(x_tough - x_pr) * np.sign(x_pr - b_tough) >= 0, alpha_mi_tough, 0.0)
    tou_map = tou_pos_map + tou_neg_map
    tol_pos_map = np.where(np.sign(x_pr - x_tol) * np.sign(x_tol - x_gt) > 0, alpha_tol, 0.0)
    tol_neg_map = np.where(np.sign(x_tol - x_pr) * np.sign(x_pr - b_tol) >= 0, alpha_mi_tol, 0.0)
    tol_map = tol_pos_map + tol_neg_map
    low = np.where(np.abs(x_gt - x_pr) <= np.abs(x_gt - x_tol), 1.0, 0.0)
    high = np.where(np.abs(x_gt - x_pr) > np.abs(x_gt - x_tol), 1.0, 0.0)
    main_high = np.mean(high * (np.square(x_gt - x_pr) + (3 * np.abs(x_gt - x_tol)) - np.square(x_gt - x_tol)))
    main_low = np.mean(low * (3 * np.abs(x_gt - x_pr)))
    loss_main = main_loss_weight * (main_high + main_low)
    loss_tough = tough_loss_weight * np.mean(tou_map * np.abs(x_tough - x_pr))
    loss_tol = tol_loss_weight * np.mean(tol_map * np.abs(x_tol - x_pr))
    return loss_main + loss_tough + loss_tol


def _inputs(seed, n=16, d=136, quantise=False):
    g = np.random.default_rng(seed)
    y = g.uniform(-0.5, 0.5, (n, d))
    s = y + 0.1 * g.standard_normal((n, d))
    tough = y + 0.05 * g.standard_normal((n, d))
    tol = y + 0.08 * g.standard_normal((n, d))
    if quantise:  # ties: student on the ground truth, on a teacher, on the band point
        s, y, tough, tol = (np.round(a * 8) / 8 for a in (s, y, tough, tol))
    return s, y, tough, tol


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("quantise", [False, True])
def test_matches_authors_code(seed, quantise):
    arrs = _inputs(seed, quantise=quantise)
    got = losskit.landmark_kd_loss(*(torch.from_numpy(a) for a in arrs))
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.item(), _official(*arrs), rtol=1e-12, atol=1e-14)


def test_other_weights_and_module():
    arrs = _inputs(7)
    kw = dict(alpha_tough=0.7, alpha_mi_tough=-0.2, alpha_tol=1.1, alpha_mi_tol=0.3, main_loss_weight=1.5,
              tough_loss_weight=0.5, tol_loss_weight=2.0)
    ours = dict(alpha_tough=0.7, beta_tough=-0.2, alpha_tolerant=1.1, beta_tolerant=0.3, main_weight=1.5,
                tough_weight=0.5, tolerant_weight=2.0)
    t = [torch.from_numpy(a) for a in arrs]
    np.testing.assert_allclose(losskit.landmark_kd_loss(*t, **ours).item(), _official(*arrs, **kw), rtol=1e-12)
    assert torch.equal(losskit.LandmarkKDLoss(**ours)(*t), losskit.landmark_kd_loss(*t, **ours))


def test_per_sample_mean_is_batch_mean():
    t = [torch.from_numpy(a) for a in _inputs(3)]
    per = losskit.landmark_kd_loss(*t, reduction="none")
    assert per.shape == (16,)
    torch.testing.assert_close(per.mean(), losskit.landmark_kd_loss(*t), rtol=1e-14, atol=0)


def test_main_loss_continuous_and_teachers_exact():
    # student on the ground truth: main loss 0; a student equal to both (reflected) teachers gets zero
    # assistive loss; the main loss is continuous where |y - s| crosses the tolerant teacher's error
    y = torch.zeros(1, 2, dtype=torch.float64)
    assert losskit.landmark_kd_loss(y, y, y + 0.3, y - 0.2).item() == 0.0
    tol = torch.full((1, 1), 0.4, dtype=torch.float64)
    z = torch.zeros(1, 1, dtype=torch.float64)
    vals = [losskit.landmark_kd_loss(z + e, z, z + 10.0, tol, tough_weight=0.0, tolerant_weight=0.0).item()
            for e in (0.4 - 1e-9, 0.4 + 1e-9)]
    assert abs(vals[0] - vals[1]) < 1e-7 and abs(vals[0] - 2 * 3 * 0.4) < 1e-7
