"""Oracle tests (issue 17) for the seed objectives of the regularizers family."""

import math

import pytest
import torch
import torch.nn.functional as F
from oracle_meta import Oracle

import losskit

AEM_COMMIT = "4a928a84354009f988e84f1382e55b7a669d2e73"
EATA_COMMIT = "f739b3668cc7617e9b9f1979c1a358497a3472c3"

ORACLES = [
    Oracle(objective="attention_entropy", repo="dazhangyu123/AEM", path="main.py (train_one_epoch, div_loss)",
           commit=AEM_COMMIT, agreement="1e-12",
           differences="the official code takes attention logits and softmaxes them; losskit takes the attention "
                       "probabilities: losskit(softmax(A)) * lamda = lamda * div_loss for one bag "
                       "(the 'mha'/'dsmil' branch divides by the number of heads, losskit averages over them)."),
    Oracle(objective="eata_entropy", repo="mr-eggplant/EATA", path="eata.py (forward_and_adapt_eata)",
           commit=EATA_COMMIT, agreement="relation",
           differences="official loss = mean over the *selected* samples (entropy < E0) of exp(E0 - H) H; losskit "
                       "'mean' divides by the whole batch (filtered samples count 0): official = "
                       "losskit(reduction='sum') / #selected. Same E0 = 0.4 ln K (main.py default for K = 1000)."),
]


# Port of dazhangyu123/AEM @ 4a928a84, main.py L217-220 (the attention-entropy term of train_one_epoch).
def _ref_aem_div_loss(attn, arch="abmil"):
    if arch == 'mha' or arch == 'dsmil':
        div_loss = torch.sum(F.softmax(attn, dim=-1) * F.log_softmax(attn, dim=-1)) / attn.shape[0]
    else:
        div_loss = torch.sum(F.softmax(attn, dim=-1) * F.log_softmax(attn, dim=-1))
    return div_loss


@pytest.mark.parametrize("scale", [1.0, 30.0, 1e3])
@pytest.mark.parametrize("arch,shape", [("abmil", (1, 17)), ("mha", (4, 9)), ("abmil", (1, 1))])
def test_attention_entropy_matches_aem(scale, arch, shape):
    g = torch.Generator().manual_seed(5)
    attn = scale * torch.randn(*shape, generator=g, dtype=torch.float64)
    attn = attn.requires_grad_(True)
    lam = 0.1  # README: --lamda 0.1
    # one bag: losskit's sample axis is the bag (N = 1), heads in the middle, instances last
    got = losskit.attention_entropy(torch.softmax(attn, -1).unsqueeze(0), lam=lam)
    ref = lam * _ref_aem_div_loss(attn, arch)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    (ga,) = torch.autograd.grad(got, attn)
    (gr,) = torch.autograd.grad(ref, attn)
    torch.testing.assert_close(ga, gr, rtol=1e-9, atol=1e-12)


def test_attention_entropy_ties_and_exact_zero_weights():
    a = torch.full((1, 1, 6), 1 / 6, dtype=torch.float64)  # ties: maximal entropy
    ref = 0.1 * _ref_aem_div_loss(torch.zeros(1, 6, dtype=torch.float64))
    torch.testing.assert_close(losskit.attention_entropy(a), ref, rtol=1e-12, atol=1e-12)
    masked = torch.tensor([[0.0, 2.0, -math.inf, 1.0]], dtype=torch.float64)  # a masked instance
    ref = 0.1 * _ref_aem_div_loss(masked.clone().masked_fill(torch.isinf(masked), -1e300))
    got = losskit.attention_entropy(torch.softmax(masked, -1).unsqueeze(0))
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)


# Port of mr-eggplant/EATA @ f739b366, eata.py: softmax_entropy (L86-91) and forward_and_adapt_eata
# (L94-133) without the redundancy filter (current_model_probs=None, the first batch), without the
# Fisher term and without the optimiser step: the loss that is backpropagated.
def _ref_softmax_entropy(x):
    temprature = 1
    x = x / temprature
    x = -(x.softmax(1) * x.log_softmax(1)).sum(1)
    return x


def _ref_eata_loss(outputs, e_margin):
    entropys = _ref_softmax_entropy(outputs)
    filter_ids_1 = torch.where(entropys < e_margin)
    entropys = entropys[filter_ids_1]
    coeff = 1 / (torch.exp(entropys.clone().detach() - e_margin))
    entropys = entropys.mul(coeff)
    loss = entropys.mean(0)
    return loss, filter_ids_1[0].numel()


@pytest.mark.parametrize("scale", [1.0, 3.0, 30.0])
def test_eata_entropy_relation_to_official(scale):
    g = torch.Generator().manual_seed(7)
    K = 1000
    e_margin = math.log(1000) * 0.40  # main.py default
    z = scale * torch.randn(16, K, generator=g, dtype=torch.float64)
    z[:6] *= 8.0  # some confident (selected) samples
    z = z.requires_grad_(True)
    ref, count = _ref_eata_loss(z, e_margin)
    assert 0 < count < 16 or scale == 30.0
    got_sum = losskit.eata_entropy(z, reduction="sum")
    torch.testing.assert_close(got_sum / count, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(losskit.eata_entropy(z) * z.shape[0] / count, ref, rtol=1e-12, atol=1e-12)
    (g1,) = torch.autograd.grad(got_sum / count, z)
    (g2,) = torch.autograd.grad(ref, z)
    torch.testing.assert_close(g1, g2, rtol=1e-9, atol=1e-14)


def test_eata_entropy_single_sample_and_default_margin():
    K = 10
    z = torch.zeros(1, K, dtype=torch.float64)
    z[0, 0] = 8.0
    ref, count = _ref_eata_loss(z, 0.4 * math.log(K))
    assert count == 1
    torch.testing.assert_close(losskit.eata_entropy(z), ref, rtol=1e-12, atol=1e-12)
    # an unreliable sample (uniform prediction: H = ln K > E0) is filtered out in both
    ref0, count0 = _ref_eata_loss(torch.zeros(1, K, dtype=torch.float64), 0.4 * math.log(K))
    assert count0 == 0 and torch.isnan(ref0)  # the official mean over no sample is NaN (it skips the step)
    assert losskit.eata_entropy(torch.zeros(1, K, dtype=torch.float64)).item() == 0.0
