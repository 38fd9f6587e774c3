"""koopman_information_loss against the authors' code.

Oracle: Wenxuan52/InformationKoopman at commit 32f52a14149020fdc38eb2a25da2c74f7c0abb4b,
``model/physical_simulation/base.py`` (``ROM_BASE.info_nce``, ``ROM_BASE.von_neumann_entropy``, ported
below line by line) and ``train_scripts/physical_simulation/trainer.py`` (the total
``loss_fwd + lamb * loss_id + lamb_mi * loss_mi + lamb_entropy * loss_entropy``, with
``lamb_mi = alpha = 2.0``, ``lamb_entropy = beta = 0.1``, ``mi_k = 3``, ``mi_temperature = 0.07`` from
``cylinder/cylinder.yaml``). The official code adds ``+ beta S``; losskit's ``entropy_weight`` enters as
``- entropy_weight * S`` (the paper's maximised entropy), so the code is ``entropy_weight = -beta``.
"""

import math

import mpmath
import pytest
import torch
import torch.nn.functional as F

import losskit


def _official_info_nce(z_seq, k=2, temperature=0.1, use_cosine=True):
    B, T, H = z_seq.shape
    if T <= 2 * k:
        return torch.tensor(0.0)
    valid_indices = torch.arange(k, T - k)
    n_valid = len(valid_indices)
    z_normalized = F.normalize(z_seq, dim=-1) if use_cosine else z_seq
    total_loss = 0.0
    for n in valid_indices:
        anchor = z_normalized[:, n, :]
        pos_indices = torch.cat([torch.arange(n - k, n), torch.arange(n + 1, n + k + 1)])
        all_indices = torch.arange(T)
        neighbor_and_self = torch.cat([torch.tensor([n]), pos_indices])
        neg_mask = ~torch.isin(all_indices, neighbor_and_self)
        neg_indices = all_indices[neg_mask]
        if len(neg_indices) == 0:
            continue
        positives = z_normalized[:, pos_indices, :]
        negatives = z_normalized[:, neg_indices, :]
        pos_scores = torch.bmm(anchor.unsqueeze(1), positives.transpose(1, 2)).squeeze(1) / temperature
        neg_scores = torch.bmm(anchor.unsqueeze(1), negatives.transpose(1, 2)).squeeze(1) / temperature
        max_pos = pos_scores.max(dim=1, keepdim=True)[0]
        max_neg = neg_scores.max(dim=1, keepdim=True)[0]
        max_all = torch.max(max_pos, max_neg)
        pos_exp_sum = torch.exp(pos_scores - max_all).sum(dim=1)
        neg_exp_sum = torch.exp(neg_scores - max_all).sum(dim=1)
        loss = -torch.log(pos_exp_sum / (pos_exp_sum + neg_exp_sum + 1e-8))
        total_loss += loss.mean()
    return total_loss / n_valid


def _official_vne(z_seq, center=True, eps=1e-8):
    B, T, H = z_seq.shape
    Z = z_seq.reshape(B * T, H)
    if center:
        Z = Z - Z.mean(dim=0, keepdim=True)
    N = Z.shape[0]
    Sigma = torch.mm(Z.t(), Z) / (N - 1)
    Sigma = Sigma + eps * torch.eye(H, dtype=Z.dtype)
    trace = torch.trace(Sigma)
    rho = Sigma / trace.clamp_min(eps)
    evals = torch.linalg.eigvalsh(rho).clamp_min(eps)
    return -(evals * torch.log(evals)).sum()


def _z(seed, b=4, t=16, h=6):
    g = torch.Generator().manual_seed(seed)
    steps = torch.arange(t, dtype=torch.float64)
    freq = 0.2 + torch.rand(b, 1, h, generator=g, dtype=torch.float64)
    return torch.sin(freq * steps[None, :, None]) + 0.3 * torch.randn(b, t, h, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("k,temperature", [(3, 0.07), (2, 0.1), (1, 0.5)])
def test_matches_authors_terms_and_total(seed, k, temperature):
    z = _z(seed)
    nce = _official_info_nce(z, k=k, temperature=temperature)
    vne = _official_vne(z)
    torch.testing.assert_close(losskit.temporal_info_nce(z, k, temperature), nce, rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(losskit.von_neumann_entropy(z), vne, rtol=1e-12, atol=1e-12)
    alpha, beta = 2.0, 0.1
    code_total = alpha * nce + beta * vne
    got = losskit.koopman_information_loss(z, mi_weight=alpha, entropy_weight=-beta, k=k, temperature=temperature)
    torch.testing.assert_close(got, code_total, rtol=1e-7, atol=1e-7)
    # the paper's sign (the default): the entropy is maximised
    paper = losskit.koopman_information_loss(z, k=k, temperature=temperature)
    torch.testing.assert_close(paper, alpha * nce - beta * vne, rtol=1e-7, atol=1e-7)


def test_gradients_match_authors_code():
    z1 = _z(5).requires_grad_(True)
    z2 = z1.detach().clone().requires_grad_(True)
    (2.0 * _official_info_nce(z1, 3, 0.07) + 0.1 * _official_vne(z1)).backward()
    losskit.koopman_information_loss(z2, entropy_weight=-0.1).backward()
    torch.testing.assert_close(z2.grad, z1.grad, rtol=1e-6, atol=1e-8)


def test_entropy_closed_form_and_bounds():
    # rho with eigenvalues proportional to the per-feature variances of independent features: with
    # orthogonal, centred columns of squared norms v the entropy is that of v / sum(v) (+ eps, ~1e-8)
    t = 8
    q, _ = torch.linalg.qr(torch.randn(4 * t, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    q = q - q.mean(0)  # columns stay near-orthogonal only after re-orthogonalising the centred ones
    q, _ = torch.linalg.qr(q)
    q = q - q.mean(0)
    v = torch.tensor([4.0, 2.0, 1.0, 0.5], dtype=torch.float64)
    z = (q * v.sqrt()).reshape(4, t, 4)
    lam = torch.linalg.eigvalsh(z.reshape(-1, 4).T.cov())  # independent float64 path
    lam = lam / lam.sum()
    want = -sum(mpmath.mpf(float(x)) * mpmath.log(float(x)) for x in lam)
    torch.testing.assert_close(losskit.von_neumann_entropy(z), torch.tensor(float(want), dtype=torch.float64),
                               rtol=1e-7, atol=1e-7)
    # isotropic latents reach the maximum log H; a rank-one (collapsed) batch reaches ~0
    iso = torch.randn(2000, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert abs(losskit.von_neumann_entropy(iso).item() - math.log(5)) < 0.01
    line = torch.randn(200, 1, dtype=torch.float64) * torch.tensor([[1.0, 2.0, -1.0]], dtype=torch.float64)
    assert losskit.von_neumann_entropy(line).item() < 1e-5


def test_entropy_term_rewards_diversity():
    # lower loss for latents spread over more modes, other things equal (paper's claim: S prevents collapse)
    z = _z(2)
    collapsed = z.clone()
    collapsed[..., 1:] = 0.01 * collapsed[..., 1:]
    e_full = losskit.koopman_information_loss(z, mi_weight=0.0)
    e_coll = losskit.koopman_information_loss(collapsed, mi_weight=0.0)
    assert e_full < e_coll


def test_short_trajectories_raise():
    with pytest.raises(losskit.LossInputError, match="z"):
        losskit.koopman_information_loss(torch.randn(2, 7, 3), k=3)
    assert torch.isfinite(losskit.koopman_information_loss(torch.randn(2, 8, 3), k=3))
