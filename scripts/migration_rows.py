"""The migration tables: "peer call -> losskit call", one :class:`Row` per peer call, defined once.

``scripts/build_docs.py`` writes the site's migration page from :data:`ROWS` (:func:`page`), and
``tests/test_migration.py`` runs every row: it executes the section's setup, evaluates the peer call and
the losskit call on the same input, and checks the row's relation (``peer == losskit`` where the
conventions agree, else the stated relation, e.g. ``peer == losskit / 2``). The page shows exactly the
code that the test runs.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass


@dataclass(frozen=True)
class Section:
    key: str
    title: str
    modules: tuple[str, ...]  # what must be importable (the test skips the rows otherwise)
    setup: str  # code run once before each row (defines the shared inputs)


@dataclass(frozen=True)
class Row:
    section: str
    peer_call: str  # an expression, the peer's value
    losskit_call: str  # an expression, losskit's value
    relation: str = "peer == losskit"  # "LHS == RHS" over `peer`, `losskit` and the setup's names
    note: str = ""  # the convention that differs, in words
    rtol: float = 1e-9
    atol: float = 1e-10

    @property
    def id(self) -> str:
        return f"{self.section}: {self.peer_call.split('(')[0]}"


_TORCH = """\
import torch
import torch.nn.functional as F
import losskit

g = torch.Generator().manual_seed(0)
logits = torch.randn(8, 5, generator=g, dtype=torch.float64)
target = torch.randint(0, 5, (8,), generator=g)
p_logits = torch.randn(8, 5, generator=g, dtype=torch.float64)
q_logits = torch.randn(8, 5, generator=g, dtype=torch.float64)
p, q = p_logits.softmax(-1), q_logits.softmax(-1)
x = torch.randn(8, generator=g, dtype=torch.float64)
t = torch.rand(8, generator=g, dtype=torch.float64)
anc, pos, neg = (torch.randn(6, 4, generator=g, dtype=torch.float64) for _ in range(3))
multi = (torch.rand(8, 5, generator=g) < 0.4).double()  # multi-hot targets
pw = torch.arange(1.0, 6.0, dtype=torch.float64)  # one weight per class
soft = torch.rand(8, 5, generator=g, dtype=torch.float64).softmax(-1)  # soft targets (mixup / distillation)
"""

_POT = """\
import numpy as np
import ot
import torch
import losskit
import losskit.transport

g = torch.Generator().manual_seed(0)
x = torch.randn(30, 2, generator=g, dtype=torch.float64)
y = torch.randn(25, 2, generator=g, dtype=torch.float64) + 0.5
a, b = ot.unif(30, type_as=x), ot.unif(25, type_as=x)
M = ot.dist(x, y)  # squared Euclidean: losskit's default cost ||x - y||^p with p = 2
reg = 0.5
theta = torch.randn(16, 2, generator=g, dtype=torch.float64)
theta = theta / theta.norm(dim=1, keepdim=True)  # 16 unit directions, shared by both calls

def kl_plan(P, a, b):  # KL(P | a (x) b), the entropic term POT's sinkhorn2 leaves out
    ab = a[:, None] * b[None, :]
    return (P * (P / ab).log() - P + ab).sum()

def linear_divergence(x, y, eps):  # POT's recipe: linear parts <P, C> of the three problems
    lin = lambda u, v: losskit.transport.solve(u, v, eps=eps, tol=1e-12).linear_cost().squeeze()
    return lin(x, y) - (lin(x, x) + lin(y, y)) / 2

xs, ys = x[:12], y[:10]  # Gromov-Wasserstein: smaller clouds, their intra-domain costs, a feature cost
C1, C2, Ms = ot.dist(xs, xs), ot.dist(ys, ys), ot.dist(xs, ys)
p12, q10 = ot.unif(12, type_as=x), ot.unif(10, type_as=x)
gw_eps = 2.0
pot_gw = dict(tol=1e-11, numItermax=10000, stopThr=1e-12)  # POT's outer / inner (ot.sinkhorn) tolerances

def entropy(P):  # sum P (log P - 1), the entropic term POT's partial solvers leave out of their value
    return (P * (P.log() - 1)).sum()

grid = torch.linspace(0, 1, 40, dtype=torch.float64)[:, None]
H = torch.stack([torch.exp(-(grid[:, 0] - c) ** 2 / 0.01) for c in (0.2, 0.5, 0.8)])
H = H / H.sum(1, keepdim=True)  # three histograms (rows) on a 40-point grid
Mg = ot.dist(grid, grid)
X0 = torch.randn(8, 2, generator=g, dtype=torch.float64)  # free-support barycenter start
"""

_GEOMLOSS = """\
import torch
import geomloss
import losskit

g = torch.Generator().manual_seed(0)
x = torch.randn(30, 2, generator=g, dtype=torch.float64)
y = torch.randn(25, 2, generator=g, dtype=torch.float64) + 0.5
n, m = len(x), len(y)
blur = 0.4
ys = torch.stack([y[:20], y[5:] - 1.0, 0.5 * y[:20]])  # K = 3 target clouds (barycenter_loss)
w = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)  # barycentric weights
"""

_PML = """\
import torch
import math
from pytorch_metric_learning import losses, miners, reducers
import losskit
from losskit.representation import ThresholdReducer

g = torch.Generator().manual_seed(0)
emb = torch.randn(9, 4, generator=g, dtype=torch.float64)
labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2])  # classes of equal size: see the notes
z1, z2 = (torch.randn(8, 6, generator=g, dtype=torch.float64) for _ in range(2))

W = torch.randn(3, 4, generator=g, dtype=torch.float64)  # class weights / proxies (C, D), losskit's layout
W_sub = torch.randn(9, 4, generator=g, dtype=torch.float64)  # 3 sub-centres per class: row c K + k
W_st = torch.randn(30, 4, generator=g, dtype=torch.float64)  # SoftTriple: 10 centres per class

def set_(loss, name, value):  # PML's losses own their weights: set them to the ones losskit is given
    getattr(loss, name).data = value.clone()
    return loss
"""

_ENTMAX = """\
import torch
import entmax
import losskit

g = torch.Generator().manual_seed(0)
logits = torch.randn(8, 6, generator=g, dtype=torch.float64)
target = torch.randint(0, 6, (8,), generator=g)
"""

_LION = """\
import torch
import lion_pytorch
import losskit.optim

def run(make_optimizer, steps=20):  # parameters after `steps` steps on a fixed quadratic
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(5))
    target = torch.randn(5)
    opt = make_optimizer([w])
    for _ in range(steps):
        opt.zero_grad()
        ((w - target) ** 2).sum().backward()
        opt.step()
    return w.detach()

lr, wd = 0.03, 0.3
"""

_TORCHVISION = """\
import torch
import torchvision
import losskit

g = torch.Generator().manual_seed(0)
c1, c2 = (10 * torch.rand(8, 2, generator=g, dtype=torch.float64) for _ in range(2))
wh1, wh2 = (1 + 5 * torch.rand(8, 2, generator=g, dtype=torch.float64) for _ in range(2))
b1 = torch.cat([c1 - wh1 / 2, c1 + wh1 / 2], 1)  # boxes (x1, y1, x2, y2), some pairs overlapping
b2 = torch.cat([c2 - wh2 / 2, c2 + wh2 / 2], 1)
"""

_TRL = """\
from collections import defaultdict
from types import SimpleNamespace
import torch
import trl
from trl.experimental.cpo import CPOTrainer
from trl.experimental.gkd import GKDTrainer
from trl.experimental.orpo import ORPOTrainer
import losskit

g = torch.Generator().manual_seed(0)
b, t = 4, 7  # a DPOTrainer batch: b chosen rows, then b rejected rows; completions of unequal lengths
lengths = torch.randint(1, t - 1, (2 * b,), generator=g)
completion_mask = ((torch.arange(t) >= 1) & (torch.arange(t) <= lengths[:, None])).long()  # token 0: prompt
per_token = -2 * torch.rand(2 * b, t - 1, generator=g, dtype=torch.float64) * completion_mask[:, 1:]
ref = -2 * torch.rand(2 * b, generator=g, dtype=torch.float64) * lengths
pc, pr = per_token.sum(1).chunk(2)  # the policy's sequence log-probs (sums), chosen and rejected
rc, rr = ref.chunk(2)  # the reference's
n_c, n_r = lengths.double().chunk(2)  # completion lengths
beta = 0.1

def stand_in(**attrs):  # the attributes TRL's loss code reads, and a model returning `per_token`
    model = SimpleNamespace(training=True)
    zeros = torch.zeros_like(per_token)
    acc = SimpleNamespace(device=torch.device("cpu"), gather=lambda x: x, gather_for_metrics=lambda x: x,
                          num_processes=1, reduce=lambda x, reduction="sum": x, sync_gradients=True)
    out = SimpleNamespace(log_probs=per_token, entropy=zeros, mean_logits=zeros, is_top1=zeros.bool())
    self = SimpleNamespace(model=model, accelerator=acc, aux_loss_enabled=False, ld_alpha=None, ref_model=None,
                           precompute_ref_logps=True, beta=beta, use_weighting=False, _tp_size=1,
                           _total_train_tokens=0, _metrics={"train": defaultdict(list), "eval": defaultdict(list)})
    self.__dict__.update(attrs)
    return self, (lambda **kw: out)

def dpo_trainer(loss_type, label_smoothing=0.0, f_divergence_type="reverse_kl", discopop_tau=0.05):
    # TRL 1.16's DPOTrainer writes its loss types inline in _compute_loss: run it on the stand-in
    self, model = stand_in(loss_types=[loss_type], loss_weights=[1.0], label_smoothing=label_smoothing,
                           f_divergence_type=f_divergence_type, f_alpha_divergence_coef=1.0,
                           args=SimpleNamespace(discopop_tau=discopop_tau, gradient_checkpointing_kwargs=None))
    inputs = {"input_ids": torch.zeros(2 * b, t, dtype=torch.long), "attention_mask": torch.ones(2 * b, t),
              "completion_mask": completion_mask, "ref_chosen_logps": rc, "ref_rejected_logps": rr}
    return trl.DPOTrainer._compute_loss(self, model, inputs, False)

desirable = torch.tensor([True, False, True, True, False, False, True, False])  # KTO: unpaired completions
kl_logps = -2 * torch.rand(2 * b, generator=g, dtype=torch.float64) * lengths  # mismatched pairs (z0)
ref_kl_logps = (kl_logps + 0.5 * torch.randn(2 * b, generator=g, dtype=torch.float64)).clamp(max=0)

def kto_trainer():  # TRL's KTOTrainer._compute_loss on the same completions, labels `desirable`
    self, model = stand_in(calculate_KL=True, loss_type="kto", desirable_weight=1.0, undesirable_weight=1.0,
                           _compute_kl_logps=lambda model, batch: kl_logps)
    inputs = {"input_ids": torch.zeros(2 * b, t, dtype=torch.long), "attention_mask": torch.ones(2 * b, t),
              "completion_mask": completion_mask, "label": desirable, "ref_logps": ref,
              "ref_KL_logps": ref_kl_logps}
    return trl.KTOTrainer._compute_loss(self, model, inputs, False)

def cpo_stub(loss_type="sigmoid", beta=0.1, simpo_gamma=0.5):  # what CPOTrainer.cpo_loss reads
    return SimpleNamespace(alpha=0.0, beta=beta, loss_type=loss_type, label_smoothing=0.0,
                           simpo_gamma=simpo_gamma, accelerator=SimpleNamespace(device="cpu"))

orpo_stub = SimpleNamespace(beta=beta, accelerator=SimpleNamespace(device="cpu"))

# GRPO: TRL's GRPOTrainer._compute_loss on a stand-in whose model returns the policy's token log-probs x
logps = -2 * torch.rand(2 * b, t - 1, generator=g, dtype=torch.float64)
old = (logps + 0.3 * torch.randn(2 * b, t - 1, generator=g, dtype=torch.float64)).clamp(max=0)
mask = completion_mask[:, 1:]
adv = torch.randn(2 * b, generator=g, dtype=torch.float64)
n_tokens = mask.sum() * 1.0

def grpo_trainer(loss_type, x=logps, importance="token", epsilon=0.2, epsilon_high=0.28, entropies=None,
                 top_entropy_quantile=1.0, is_ratio=None):
    # entropies / top_entropy_quantile: TRL's entropy masking; is_ratio: the vLLM importance-sampling ratio
    self, _ = stand_in(
        _get_per_token_logps_and_entropies=lambda *a, **k: (x, torch.zeros_like(x) if entropies is None
                                                            else entropies, None),
        get_gamma_weights=trl.GRPOTrainer.get_gamma_weights, top_entropy_quantile=top_entropy_quantile,
        off_policy_mask_threshold=None, importance_sampling_level=importance, beta=0.0, loss_type=loss_type,
        epsilon_low=epsilon, epsilon_high=epsilon_high, use_vllm=is_ratio is not None,
        vllm_importance_sampling_correction=is_ratio is not None,
        current_gradient_accumulation_steps=1, max_completion_length=t - 1, _entropy_bonus_enabled=False,
        args=SimpleNamespace(use_bias_correction_kl=False, delta=None, steps_per_generation=1,
                             sapo_temperature_pos=1.0, sapo_temperature_neg=1.05, vespo_k_pos=2.0,
                             vespo_lambda_pos=3.0, vespo_k_neg=3.0, vespo_lambda_neg=2.0))
    self.accelerator.pad_across_processes = lambda x, dim=0, pad_index=0: x
    self.get_high_entropy_mask = lambda *a: trl.GRPOTrainer.get_high_entropy_mask(self, *a)
    inputs = {"prompt_ids": torch.zeros(2 * b, 1, dtype=torch.long), "prompt_mask": torch.ones(2 * b, 1),
              "completion_ids": torch.zeros(2 * b, t - 1, dtype=torch.long), "completion_mask": mask,
              "advantages": adv, "old_per_token_logps": old, "num_items_in_batch": n_tokens}
    if is_ratio is not None:
        inputs["importance_sampling_ratio"] = is_ratio
    return trl.GRPOTrainer._compute_loss(self, None, inputs)

ent = 3 * torch.rand(2 * b, t - 1, generator=g, dtype=torch.float32)  # per-token entropies, float32 as a model's
sampling = (old + torch.randn(2 * b, t - 1, generator=g, dtype=torch.float64)).clamp(max=0)  # vLLM's log-probs
# TRL computes the vLLM ratio inline in _generate_and_score_completions (no callable): its two token modes
tis = torch.exp((old - sampling) * mask).clamp(max=3.0)  # 'token_truncate' (the default, cap 3)
tis_mask = torch.exp((old - sampling) * mask)
tis_mask = tis_mask.masked_fill((tis_mask < 0.5) | (tis_mask > 2.0), 0.0)  # 'token_mask', bounds [0.5, 2]

def reward_trainer(margin=None, center=None):  # TRL's RewardTrainer.compute_loss; the model returns rewards r
    inputs = {"input_ids": torch.zeros(2 * b, t, dtype=torch.long), "attention_mask": torch.ones(2 * b, t)}
    if margin is not None:
        inputs["margin"] = margin
    self, _ = stand_in(args=SimpleNamespace(center_rewards_coefficient=center))
    return trl.RewardTrainer.compute_loss(self, lambda **kw: SimpleNamespace(logits=r[:, None]), inputs)

r = torch.randn(2 * b, generator=g, dtype=torch.float64)  # reward-model outputs: b chosen, then b rejected
rm_margin = torch.rand(b, generator=g, dtype=torch.float64)

# GKD: student and teacher logits (B, T, V) as TRL takes them; labels -100 on the prompt and the padding
s_logits, t_logits = (torch.randn(2, 5, 11, generator=g, dtype=torch.float64) for _ in range(2))
gkd_labels = torch.tensor([[-100, 3, 4, 1, -100], [-100, -100, 7, 2, 9]])

def grad(f):  # the gradient of a loss with respect to the policy's token log-probs
    x = logps.clone().requires_grad_(True)
    return torch.autograd.grad(f(x), x)[0]
"""

SECTIONS = [
    Section("pytorch", "PyTorch (`torch.nn.functional`)", ("torch",), _TORCH),
    Section("pot", "POT (Python Optimal Transport)", ("ot",), _POT),
    Section("geomloss", "GeomLoss", ("geomloss",), _GEOMLOSS),
    Section("pml", "pytorch-metric-learning", ("pytorch_metric_learning",), _PML),
    Section("entmax", "entmax", ("entmax",), _ENTMAX),
    Section("lion", "lion-pytorch", ("lion_pytorch",), _LION),
    Section("torchvision", "torchvision (`torchvision.ops` box losses)", ("torchvision",), _TORCHVISION),
    Section("trl", "TRL (preference and policy-gradient losses)", ("trl", "transformers"), _TRL),
]

ROWS = [
    # ------------------------------------------------------------------------------------ PyTorch
    Row("pytorch", "F.cross_entropy(logits, target)", "losskit.cross_entropy(logits, target)"),
    Row("pytorch", "F.cross_entropy(logits, target, weight=torch.arange(1.0, 6.0, dtype=torch.float64), "
                   "label_smoothing=0.1)",
        "losskit.cross_entropy(logits, target, weight=torch.arange(1.0, 6.0, dtype=torch.float64), "
        "label_smoothing=0.1)",
        note="same weighted-mean denominator as torch (the sum of the targets' class weights)"),
    Row("pytorch", "F.kl_div(F.log_softmax(q_logits, -1), F.softmax(p_logits, -1), reduction='batchmean')",
        "losskit.kl_divergence(p_logits, q_logits)",
        note="torch takes (log q, p) and computes KL(p || q); losskit takes (p, q) in the order of the name, "
             "as logits by default. Use `reduction='batchmean'` in torch: its default 'mean' divides by "
             "the number of entries (next row)"),
    Row("pytorch", "F.kl_div(F.log_softmax(q_logits, -1), F.softmax(p_logits, -1))",
        "losskit.kl_divergence(p_logits, q_logits)", relation="peer == losskit / 5",
        note="torch's default reduction='mean' averages over the N * K entries, not the N distributions"),
    Row("pytorch", "F.kl_div(q.log(), p, reduction='batchmean')",
        "losskit.kl_divergence(p, q, input_space='probs')",
        note="probabilities need `input_space='probs'`: without it losskit reads them as logits and "
             "computes a different (much smaller) divergence"),
    Row("pytorch", "F.binary_cross_entropy_with_logits(x, t)",
        "losskit.binary_focal(x, t, alpha=None, gamma=0.0)",
        note="binary focal with gamma = 0 and no alpha balancing is the binary cross-entropy"),
    Row("pytorch", "F.binary_cross_entropy_with_logits(logits, multi, pos_weight=pw)",
        "losskit.binary_cross_entropy(logits, multi, pos_weight=pw)",
        note="torch.nn.BCEWithLogitsLoss(pos_weight=pw) is the same call; 'mean' over all N x K entries in both"),
    Row("pytorch", "F.binary_cross_entropy_with_logits(logits, multi, weight=pw, pos_weight=pw.flip(0))",
        "losskit.binary_cross_entropy(logits, multi, weight=pw, pos_weight=pw.flip(0))",
        note="`weight` (K,) scales both terms of a class, `pos_weight` the positive term only, as torch"),
    Row("pytorch", "F.binary_cross_entropy_with_logits(logits, F.one_hot(target, 5).double() * 0.9 + 0.1 / 5)",
        "losskit.binary_cross_entropy(logits, target, label_smoothing=0.1)",
        note="class-index targets become one-hot rows smoothed to 1 - eps + eps / K and eps / K (timm's "
             "BinaryCrossEntropy convention); torch needs the smoothed dense target"),
    Row("pytorch", "F.binary_cross_entropy_with_logits(logits, (soft > 0.25).double())",
        "losskit.binary_cross_entropy(logits, soft, target_threshold=0.25)",
        note="timm's target_threshold: dense (e.g. mixup) targets binarised as 1[t > threshold]"),
    Row("pytorch", "F.cross_entropy(logits, soft)", "losskit.cross_entropy(logits, soft)",
        note="soft-target (probability) cross-entropy: float targets of the logits' shape, as torch"),
    Row("pytorch", "F.cross_entropy(logits, soft, label_smoothing=0.1)",
        "losskit.cross_entropy(logits, soft, label_smoothing=0.1)",
        note="smoothing mixes soft targets with the uniform distribution, as torch"),
    Row("pytorch", "F.triplet_margin_loss(anc, pos, neg, margin=1.0, reduction='none')",
        "torch.stack([losskit.triplet_margin(torch.stack([anc[i], pos[i], neg[i]]), torch.tensor([0, 0, 1]), "
        "margin=1.0, reduction='none')[0] for i in range(len(anc))])",
        note="torch takes explicit (anchor, positive, negative) triplets; losskit mines the triplets of a "
             "labelled batch. One explicit triplet is a batch of three points labelled (0, 0, 1), read at "
             "the anchor. torch adds eps = 1e-6 inside the distance, hence the tolerance",
        rtol=1e-5, atol=1e-5),
    # ----------------------------------------------------------------------------------------- POT
    Row("pot", "ot.emd2(a, b, M)", "losskit.exact_ot(x, y)"),
    Row("pot", "ot.sinkhorn2(a, b, M, reg, method='sinkhorn_log', stopThr=1e-12, numItermax=10000)",
        "losskit.sinkhorn(x, y, eps=reg, tol=1e-12)",
        relation="losskit == peer + reg * kl_plan(ot.sinkhorn(a, b, M, reg, method='sinkhorn_log', "
                 "stopThr=1e-12, numItermax=10000), a, b)",
        note="losskit.sinkhorn is the full entropic cost <P, C> + eps KL(P | a (x) b); POT's sinkhorn2 "
             "returns the linear part <P, C> only", rtol=1e-7),
    Row("pot", "ot.sinkhorn2(a, b, M, reg, method='sinkhorn_log', stopThr=1e-12, numItermax=10000)",
        "losskit.transport.solve(x, y, eps=reg, tol=1e-12).linear_cost().squeeze()",
        note="the linear part, as POT reports it: `losskit.transport.solve(...).linear_cost()`", rtol=1e-7),
    Row("pot", "ot.bregman.empirical_sinkhorn_divergence(x, y, reg, a=a, b=b)",
        "linear_divergence(x, y, reg)",
        note="POT builds its divergence from linear parts; losskit.sinkhorn_divergence from entropic costs "
             "(the debiased form of Feydy et al. 2019): they differ, by 7.7% on this setup. To match POT, combine "
             "the linear parts of `losskit.transport.solve` (`linear_divergence` in the setup)",
        rtol=1e-6),
    Row("pot", "ot.sliced_wasserstein_distance(x, y, projections=theta.T, p=2)",
        "losskit.sliced_wasserstein(x, y, projections=theta)", relation="peer ** 2 == losskit",
        note="POT returns SW_p = (mean of W_p^p)^(1/p); losskit returns SW_p^p (no root: smooth at 0). "
             "POT's projections are (d, L), losskit's (L, d)", rtol=1e-10),
    Row("pot", "ot.gromov.entropic_gromov_wasserstein2(C1, C2, p12, q10, 'square_loss', epsilon=gw_eps, **pot_gw)",
        "losskit.transport.solve_gromov(C1, C2, p12, q10, eps=gw_eps, tol=1e-11).loss.squeeze()",
        note="same epsilon (units of the linearised cost), same square loss (no 1/2), same PGD iteration from "
             "a b^T; `.loss` is POT's number (the GW loss at the plan, without the entropic term)", rtol=1e-8),
    Row("pot", "ot.gromov.entropic_gromov_wasserstein2(C1, C2, p12, q10, 'square_loss', epsilon=gw_eps, **pot_gw)",
        "losskit.gromov_wasserstein(xs, ys, eps=gw_eps, tol=1e-11)",
        relation="losskit == peer + gw_eps * kl_plan(ot.gromov.entropic_gromov_wasserstein(C1, C2, p12, q10, "
                 "'square_loss', epsilon=gw_eps, **pot_gw), p12, q10)",
        note="the loss takes the points (C1, C2 = ||.||^2 inside, p = 2) and returns the entropic value; POT reports "
             "it without eps KL(T | a (x) b). Both stop on a plan-change tolerance, hence 1e-8", rtol=1e-8),
    Row("pot", "ot.gromov.entropic_fused_gromov_wasserstein2(Ms, C1, C2, p12, q10, 'square_loss', epsilon=gw_eps, "
               "alpha=0.5, **pot_gw)",
        "losskit.fused_gromov_wasserstein(xs, ys, Ms, alpha=0.5, eps=gw_eps, tol=1e-11)",
        relation="losskit == peer + gw_eps * kl_plan(ot.gromov.entropic_fused_gromov_wasserstein(Ms, C1, C2, p12, q10, "
                 "'square_loss', epsilon=gw_eps, alpha=0.5, **pot_gw), p12, q10)",
        note="the losskit objective is the entropic value (the envelope theorem gives its gradients); POT reports "
             "it without eps KL(T | a (x) b). losskit takes the points (C1, C2 = ||.||^2 inside) and M",
        rtol=1e-8),
    Row("pot", "ot.unbalanced.sinkhorn_unbalanced2(a, b, M, reg, 1.0, returnCost='total', numItermax=100000, "
               "stopThr=1e-13)",
        "losskit.sinkhorn(x, y, eps=reg, rho=1.0, tol=1e-12, max_iter=100000)",
        relation="losskit == peer + (reg + 2 * 1.0) * (1 - ot.unbalanced.sinkhorn_unbalanced(a, b, M, reg, 1.0, "
                 "numItermax=100000, stopThr=1e-13).sum())",
        note="POT's reg_m is losskit's rho (same cost units). POT's 'total' cost drops the mass terms (- p + q) of "
             "its three generalised KLs; losskit keeps them: with |a| = |b| = 1 they add (eps + 2 rho)(1 - |P|) "
             "at the plan P", rtol=1e-9),
    Row("pot", "ot.unbalanced.sinkhorn_unbalanced2(a, b, M, reg, 1.0, numItermax=100000, stopThr=1e-13)",
        "losskit.transport.solve(x, y, eps=reg, rho=1.0, tol=1e-12, max_iter=100000).linear_cost().squeeze()",
        note="POT's default returnCost='linear': the transport part <P, C> of the unbalanced plan", rtol=1e-9),
    Row("pot", "ot.gaussian.empirical_bures_wasserstein_distance(x, y, reg=1e-6)", "losskit.bures_wasserstein(x, y)",
        relation="peer ** 2 == losskit",
        note="POT returns the distance W_2, losskit its square (cost units, as exact_ot); same reg on the covariances"),
    Row("pot", "ot.wasserstein_1d(x[:, 0], y[:, 0], a, b, p=1)", "losskit.wasserstein_1d(x[:, 0], y[:, 0], a=a, b=b, p=1)",
        note="both return W_p^p (no root); losskit's default p is 2, POT's 1"),
    Row("pot", "ot.partial.partial_wasserstein2(a, b, M, m=0.5)", "losskit.partial_ot(x, y, mass=0.5)",
        note="`mass` is POT's m (absolute mass, at most min(|a|, |b|))", rtol=1e-10),
    Row("pot", "ot.partial.entropic_partial_wasserstein(a, b, M, reg, m=0.5, numItermax=100000, stopThr=1e-14, "
               "log=True)[1]['partial_w_dist']",
        "losskit.entropic_partial_ot(x, y, mass=0.5, eps=reg, tol=1e-12)",
        relation="losskit == peer + reg * entropy(ot.partial.entropic_partial_wasserstein(a, b, M, reg, m=0.5, "
                 "numItermax=100000, stopThr=1e-14))",
        note="POT's value is the linear part <P, C>; losskit's the entropic objective <P, C> + eps sum P (log P - 1) "
             "(same entropy, same plan)", rtol=1e-8),
    Row("pot", "ot.bregman.barycenter(H.T, Mg, 0.01, method='sinkhorn_log', numItermax=100000, stopThr=1e-11)",
        "losskit.transport.barycenter(H, Mg, eps=0.01, tol=1e-11, max_iter=100000)",
        note="a solver, not a loss; losskit's histograms are rows (POT's columns). POT's default method "
             "'sinkhorn' (no log domain) stops elsewhere at small reg", rtol=1e-8, atol=1e-10),
    Row("pot", "ot.lp.free_support_barycenter([x, y], [a, b], X0)",
        "losskit.transport.free_support_barycenter([x, y], [a, b], X0)", rtol=1e-10, atol=1e-12),
    # ------------------------------------------------------------------------------------ GeomLoss
    Row("geomloss", "geomloss.SamplesLoss('sinkhorn', p=2, blur=blur, scaling=0.999, backend='tensorized')(x, y)",
        "losskit.sinkhorn_divergence(x, y, eps=2 * blur ** 2, tol=1e-12)", relation="peer == losskit / 2",
        note="GeomLoss's cost is |x - y|^2 / 2 with eps = blur^2; losskit's is |x - y|^2, so "
             "eps = 2 blur^2 and a factor 2. GeomLoss stops after its eps-scaling schedule (no "
             "tolerance): its error shrinks with 1 - scaling (3e-6 here at 0.999, 1e-4 at 0.995, 3e-3 at "
             "0.9), hence the tolerance of the row", rtol=1e-5),
    Row("geomloss", "geomloss.SamplesLoss('sinkhorn', p=2, blur=blur, reach=1.0, scaling=0.999, "
                    "backend='tensorized')(x, y)",
        "losskit.unbalanced_sinkhorn_divergence(x, y, eps=2 * blur ** 2, rho=2 * 1.0 ** 2, tol=1e-12)",
        relation="peer == losskit / 2",
        note="unbalanced: GeomLoss's rho = reach^p is in its halved-cost units, so losskit's rho (cost units of "
             "|x - y|^2) is 2 reach^2; eps and the factor 2 as above. The annealing error is larger unbalanced "
             "(2e-5 at scaling 0.999)", rtol=5e-5),
    Row("geomloss", "sum(w[k] * geomloss.SamplesLoss('sinkhorn', p=2, blur=blur, scaling=0.995, "
                    "backend='tensorized')(x, ys[k]) for k in range(3))",
        "losskit.barycenter_loss(x, ys, weights=w, eps=2 * blur ** 2, tol=1e-12)", relation="peer == losskit / 2",
        note="barycenter_loss is the w-weighted sum of Sinkhorn divergences to the K targets (ys: (K, m, d)); "
             "GeomLoss has no barycentric loss: sum its divergences (same conventions as above; scaling 0.995 "
             "for speed: 2e-5 annealing error)", rtol=5e-5),
    Row("geomloss", "geomloss.SamplesLoss('gaussian', blur=blur, backend='tensorized')(x, y)",
        "losskit.mmd(x, y, kernel='gaussian', bandwidth=blur, estimator='biased')", relation="peer == losskit / 2",
        note="GeomLoss reports half the biased MMD^2; losskit's default estimator is the unbiased one",
        rtol=1e-8),
    Row("geomloss", "geomloss.SamplesLoss('energy', backend='tensorized')(x, y)",
        "losskit.energy_distance(x, y)", relation="losskit == 2 * peer + 1e-4 * (1 / n + 1 / m)",
        note="half the (biased) energy distance; GeomLoss clamps the squared distances at 1e-8, so its "
             "diagonal distances are 1e-4, not 0", rtol=1e-8),
    # ------------------------------------------------------------------------- metric learning (PML)
    Row("pml", "losses.TripletMarginLoss(margin=0.2, reducer=reducers.MeanReducer())(emb, labels)",
        "losskit.triplet_margin(emb, labels, margin=0.2, normalize=True)",
        note="PML's default margin is 0.05 (losskit: 0.2) and it normalises the embeddings (losskit: "
             "`normalize=True`); its MeanReducer averages all triplets, losskit the per-anchor means: equal "
             "when every anchor has as many triplets (classes of equal size)"),
    Row("pml", "losses.TripletMarginLoss()(emb, labels)",
        "losskit.triplet_margin(emb, labels, margin=0.05, normalize=True, reducer='nonzero')",
        note="PML's default reducer (AvgNonZeroReducer) averages only the triplets with a positive loss: "
             "losskit's `reducer='nonzero'`"),
    Row("pml", "losses.TripletMarginLoss(margin=0.2, reducer=reducers.ThresholdReducer(low=0.1, high=0.5))"
               "(emb, labels)",
        "losskit.triplet_margin(emb, labels, margin=0.2, normalize=True, reducer=ThresholdReducer(low=0.1, high=0.5))",
        note="the mean of the triplet losses strictly between low and high"),
    Row("pml", "losses.TripletMarginLoss(margin=0.2)(emb, labels, miners.BatchHardMiner()(emb, labels))",
        "losskit.triplet_margin(emb, labels, margin=0.2, normalize=True, mining='batch_hard', reducer='nonzero')",
        note="PML mines with a separate miner object passed to the loss; losskit's `mining=` forms the same "
             "triplets (the farthest positive and the nearest negative of each anchor)"),
    Row("pml", "losses.TripletMarginLoss(margin=0.2)(emb, labels, miners.TripletMarginMiner(margin=0.2, "
               "type_of_triplets='semihard')(emb, labels))",
        "losskit.triplet_margin(emb, labels, margin=0.2, normalize=True, mining='semihard', reducer='nonzero')",
        note="semi-hard: d(a, p) < d(a, n) <= d(a, p) + mining_margin (the miner's margin, losskit's "
             "`mining_margin`, default the loss margin)"),
    Row("pml", "losses.TripletMarginLoss(margin=0.2)(emb, labels, miners.TripletMarginMiner(margin=0.2, "
               "type_of_triplets='hard')(emb, labels))",
        "losskit.triplet_margin(emb, labels, margin=0.2, normalize=True, mining='hard', reducer='nonzero')"),
    Row("pml", "losses.ContrastiveLoss(pos_margin=0, neg_margin=1, reducer=reducers.MeanReducer())(emb, labels)",
        "losskit.contrastive_margin(emb, labels, power=1.0, normalize=True)",
        note="PML's hinge is not squared (losskit's default `power=2`); its default reducer averages "
             "non-zero pairs only"),
    Row("pml", "losses.ContrastiveLoss()(emb, labels)",
        "losskit.contrastive_margin(emb, labels, power=1.0, normalize=True, reducer='nonzero')",
        note="PML's default AvgNonZeroReducer, applied to the positive-pair and the negative-pair terms apart "
             "(then added)"),
    Row("pml", "losses.ContrastiveLoss(reducer=reducers.PerAnchorReducer())(emb, labels)",
        "losskit.contrastive_margin(emb, labels, power=1.0, normalize=True)",
        note="per-anchor means, then the mean over anchors: losskit's default (reducer=None)"),
    Row("pml", "losses.ContrastiveLoss()(emb, labels, miners.PairMarginMiner()(emb, labels))",
        "losskit.contrastive_margin(emb, labels, power=1.0, normalize=True, reducer='nonzero', miner='pair_margin')",
        note="PML's PairMarginMiner defaults (pos_margin 0.2, neg_margin 0.8) are losskit's PairMarginMiner's"),
    Row("pml", "losses.NTXentLoss(temperature=0.1)(torch.cat([z1, z2]), torch.cat([torch.arange(8)] * 2))",
        "losskit.nt_xent(z1, z2, temperature=0.1)",
        note="PML's default temperature is 0.07 (losskit: 0.1); PML takes one batch with labels, losskit "
             "the two views"),
    Row("pml", "losses.MultiSimilarityLoss(alpha=2, beta=50, base=0.5)(emb, labels)",
        "losskit.multi_similarity(emb, labels, miner=None)",
        note="PML's loss has no miner (its MultiSimilarityMiner is separate); losskit mines by default"),
    Row("pml", "losses.MultiSimilarityLoss()(emb, labels, miners.MultiSimilarityMiner()(emb, labels))",
        "losskit.multi_similarity(emb, labels)",
        note="losskit's default miner is the paper's (PML's MultiSimilarityMiner, epsilon 0.1)"),
    Row("pml", "losses.CircleLoss()(emb, labels)", "losskit.circle_loss(emb, labels)",
        note="same defaults (m = 0.4, gamma = 80); anchors without a positive or a negative are left out"),
    Row("pml", "losses.LiftedStructureLoss()(emb, labels)",
        "losskit.lifted_structure(emb, labels, normalize=True, reducer='nonzero')",
        note="PML normalises the embeddings and averages the positive pairs with a positive loss; losskit's "
             "defaults are the paper's (raw embeddings, every positive pair)"),
    Row("pml", "losses.NPairsLoss()(torch.cat([z1, z2]), torch.cat([torch.arange(8)] * 2))",
        "losskit.n_pairs(z1, z2, normalize=True)",
        note="PML's default distance normalises the embeddings (losskit's default: raw inner products, the "
             "paper's)"),
    Row("pml", "losses.FastAPLoss()(emb, labels)", "losskit.fast_ap(emb, labels)", note="num_bins 10 in both"),
    Row("pml", "set_(losses.ArcFaceLoss(3, 4), 'W', W.T)(emb, labels)",
        "losskit.arcface(emb, labels, W, margin=math.radians(28.6))",
        note="PML's margin is in degrees (28.6), losskit's in radians (0.5); PML's weights W are (D, C), "
             "losskit's proxies (C, D), an input"),
    Row("pml", "set_(losses.CosFaceLoss(3, 4), 'W', W.T)(emb, labels)", "losskit.cosface(emb, labels, W)",
        note="same defaults (margin 0.35, scale 64)"),
    Row("pml", "set_(losses.SubCenterArcFaceLoss(num_classes=3, embedding_size=4), 'W', W_sub.T)(emb, labels)",
        "losskit.subcenter_arcface(emb, labels, W_sub, margin=math.radians(28.6))",
        note="column c K + k of PML's W is losskit's row c K + k (sub-centre k of class c; K = 3 in both)"),
    Row("pml", "set_(losses.SphereFaceLoss(3, 4), 'W', W.T)(emb, labels)", "losskit.sphereface(emb, labels, W)",
        note="margin 4 (an integer multiplier of the angle) in both"),
    Row("pml", "set_(losses.LargeMarginSoftmaxLoss(3, 4), 'W', W.T)(emb, labels)",
        "losskit.large_margin_softmax(emb, labels, W)"),
    Row("pml", "set_(losses.ProxyNCALoss(3, 4), 'proxies', W)(emb, labels)", "losskit.proxy_nca(emb, labels, W)",
        note="PML's softmax_scale (1) is losskit's scale; the denominator runs over every proxy "
             "(denominator='all', losskit's default)"),
    Row("pml", "set_(losses.ProxyAnchorLoss(3, 4), 'proxies', W)(emb, labels)",
        "losskit.proxy_anchor(emb, labels, W)",
        note="same defaults (margin 0.1, alpha 32)"),
    Row("pml", "set_(losses.SoftTripleLoss(3, 4), 'fc', W_st.T)(emb, labels)",
        "losskit.soft_triple(emb, labels, W_st)",
        note="same defaults (10 centres per class, la 20, gamma 0.1, margin 0.01); PML's fc is (D, C K)"),
    Row("pml", "losses.SupConLoss(temperature=0.1)(emb, labels)", "losskit.supcon(emb, labels, temperature=0.1)"),
    # ------------------------------------------------------------------------------------- entmax
    Row("entmax", "entmax.SparsemaxLoss()(logits, target)", "losskit.sparsemax_loss(logits, target)",
        note="entmax's 'elementwise_mean' (its default) is the mean over the batch, losskit's 'mean'"),
    Row("entmax", "entmax.Entmax15Loss()(logits, target)",
        "losskit.entmax_loss(logits, target, alpha=1.5)", rtol=1e-6, atol=1e-8),
    # -------------------------------------------------------------------------------- lion-pytorch
    Row("lion", "run(lambda ps: lion_pytorch.Lion(ps, lr=lr, weight_decay=wd))",
        "run(lambda ps: losskit.optim.Lion(ps, lr=lr, weight_decay=wd))", rtol=1e-6, atol=1e-6),
    Row("lion", "run(lambda ps: lion_pytorch.Lion(ps, lr=lr, weight_decay=wd, decoupled_weight_decay=True))",
        "run(lambda ps: losskit.optim.Lion(ps, lr=lr, weight_decay=wd / lr))", rtol=1e-6, atol=1e-6,
        note="lion-pytorch's `decoupled_weight_decay=True` decays by wd (times lr / initial lr) per step, "
             "independently of the learning rate; losskit's weight decay is always lr-scaled "
             "(theta *= 1 - lr * wd, what the paper and lion-pytorch's default do): divide by lr"),
    # -------------------------------------------------------------------------------- torchvision
    Row("torchvision", "torchvision.ops.generalized_box_iou_loss(b1, b2)",
        "losskit.giou_loss(b1, b2, reduction='none')",
        note="torchvision's default reduction is 'none', losskit's 'mean'; malformed boxes (x2 < x1) give "
             "torchvision a silently wrong value and losskit a LossInputError", rtol=1e-12, atol=1e-12),
    Row("torchvision", "torchvision.ops.distance_box_iou_loss(b1, b2, reduction='mean')",
        "losskit.diou_loss(b1, b2)", rtol=1e-12, atol=1e-12),
    Row("torchvision", "torchvision.ops.complete_box_iou_loss(b1, b2, reduction='sum')",
        "losskit.ciou_loss(b1, b2, reduction='sum')",
        note="equal at the default eps = 1e-7; torchvision passes another eps to alpha only, losskit to the "
             "IoU and the enclosing diagonal too", rtol=1e-12, atol=1e-12),
    # ------------------------------------------------------------------------------------------------ TRL
    Row("trl", "dpo_trainer('sigmoid')", "losskit.dpo(pc, pr, rc, rr, beta=beta)",
        note="TRL's DPOTrainer scores a completion by its summed token log-probs; losskit's pairwise heads take "
             "those (B,) sequence scores (losskit.preference.sequence_scores builds them from token log-probs)"),
    Row("trl", "dpo_trainer('hinge')", "losskit.hinge_dpo(pc, pr, rc, rr, beta=beta)"),
    Row("trl", "dpo_trainer('ipo')", "losskit.ipo(pc / n_c, pr / n_r, rc / n_c, rr / n_r, beta=beta)",
        note="TRL's 'ipo' averages the log-ratios over the completion tokens; losskit's ipo takes the scores it is "
             "given: pass per-token means (sequence_scores(..., aggregation='mean'))"),
    Row("trl", "dpo_trainer('sigmoid_norm')", "losskit.dpo(pc / n_c, pr / n_r, rc / n_c, rr / n_r, beta=beta)",
        note="TRL's length-normalised DPO is DPO on per-token mean scores"),
    Row("trl", "dpo_trainer('exo_pair', label_smoothing=1e-3)",
        "losskit.exo(pc, pr, rc, rr, beta=beta, label_smoothing=1e-3)",
        note="TRL makes the smoothing a float32 tensor (its log(1 - eps), log eps are float32), hence the tolerance",
        rtol=1e-7, atol=1e-9),
    Row("trl", "dpo_trainer('nca_pair')", "losskit.nca(pc, pr, rc, rr, beta=beta)"),
    Row("trl", "dpo_trainer('robust', label_smoothing=0.2)",
        "losskit.robust_dpo(pc, pr, rc, rr, beta=beta, label_smoothing=0.2)"),
    Row("trl", "dpo_trainer('bco_pair')", "losskit.bco(pc, pr, rc, rr, beta=beta, delta=0.0)",
        note="TRL 1.16's 'bco_pair' has no running reward mean (losskit's delta, the paper's shift): delta = 0"),
    Row("trl", "dpo_trainer('sppo_hard')", "losskit.sppo_hard(pc, pr, rc, rr, beta=beta)"),
    Row("trl", "dpo_trainer('aot', label_smoothing=0.1)",
        "losskit.aot(pc, pr, rc, rr, beta=beta, label_smoothing=0.1, paired=True)"),
    Row("trl", "dpo_trainer('aot_unpaired', label_smoothing=0.1)",
        "losskit.aot(pc, pr, rc, rr, beta=beta, label_smoothing=0.1, paired=False)"),
    Row("trl", "dpo_trainer('apo_zero')", "losskit.apo_zero(pc, pr, rc, rr, beta=beta)"),
    Row("trl", "dpo_trainer('apo_down')", "losskit.apo_down(pc, pr, rc, rr, beta=beta)"),
    Row("trl", "dpo_trainer('discopop', discopop_tau=0.05)",
        "losskit.discopop(pc, pr, rc, rr, beta=beta, tau=0.05)",
        note="losskit's default beta for discopop is the paper's 0.05: pass TRL's beta"),
    Row("trl", "dpo_trainer('sigmoid', f_divergence_type='js_divergence')",
        "losskit.f_dpo(pc, pr, rc, rr, beta=beta, divergence='js')"),
    Row("trl", "dpo_trainer('sigmoid', f_divergence_type='forward_kl')",
        "losskit.f_dpo(pc, pr, rc, rr, beta=beta, divergence='forward_kl')",
        note="TRL's forward-KL f'(t) = 1 - 1/t, losskit's -1/t: the constant cancels in the chosen - rejected margin"),
    Row("trl", "kto_trainer()",
        "losskit.kto(torch.cat([pc, pr]), ref, desirable, kl_logps, ref_kl_logps, beta=beta)",
        note="the reference point z0 is estimated as TRL's: the mean log-ratio of the mismatched pairs, clamped at "
             "0 and detached (TRL also averages it over processes: pass `reference_point=` for that)"),
    Row("trl", "CPOTrainer.cpo_loss(cpo_stub(), pc, pr)[0].mean()", "losskit.cpo(pc, pr, beta=beta, alpha=0.0)",
        note="cpo_loss is the preference term; CPO's NLL term (TRL's cpo_alpha) is losskit's alpha with chosen_nll"),
    Row("trl", "CPOTrainer.cpo_loss(cpo_stub('simpo', beta=2.0, simpo_gamma=0.5), pc / n_c, pr / n_r)[0].mean()",
        "losskit.simpo(pc / n_c, pr / n_r, beta=2.0, gamma=0.5)",
        note="SimPO scores are per-token means (TRL's CPOTrainer averages them for loss_type='simpo')"),
    Row("trl", "-ORPOTrainer.odds_ratio_loss(orpo_stub, pc, pr)[0].mean()",
        "losskit.orpo(pc, pr, beta=beta, nll_weight=0.0)",
        note="TRL returns beta log sigma(log odds ratio), which its trainer subtracts from the NLL; losskit returns "
             "the loss (with the NLL when nll_weight > 0). TRL casts the log-probs to float32, hence the tolerance",
        rtol=1e-6, atol=1e-7),
    Row("trl", "grpo_trainer('dapo')", "losskit.grpo(logps, old, adv, mask, epsilon_high=0.28, "
                                       "num_items_in_batch=n_tokens)",
        note="losskit's aggregation is explicit: TRL's loss_type grpo / bnpo / dr_grpo / dapo are aggregation= "
             "(TRL's dapo divides by num_items_in_batch: pass it)"),
    Row("trl", "grpo_trainer('grpo')", "losskit.grpo(logps, old, adv, mask, epsilon_high=0.28, aggregation='grpo')"),
    Row("trl", "grpo_trainer('dr_grpo')",
        "losskit.grpo(logps, old, adv, mask, epsilon_high=0.28, aggregation='dr_grpo', max_completion_length=t - 1)"),
    Row("trl", "grpo_trainer('grpo', importance='sequence', epsilon=3e-4, epsilon_high=4e-4)",
        "losskit.gspo(logps, old, adv, mask)", note="GSPO: the sequence-level ratio with the paper's clip range"),
    Row("trl", "grpo_trainer('luspo', importance='sequence', epsilon=3e-4, epsilon_high=4e-4)",
        "losskit.luspo(logps, old, adv, mask)", note="LUSPO: GSPO with each sequence's loss scaled by its length"),
    Row("trl", "grpo_trainer('sapo')", "losskit.sapo(logps, old, adv, mask)"),
    Row("trl", "grad(lambda x: grpo_trainer('cispo', x, epsilon_high=5.0))",
        "grad(lambda x: losskit.grpo(x, old, adv, mask, clip='cispo', epsilon_high=4.0, num_items_in_batch=n_tokens))",
        note="gradients: TRL's CISPO cap is epsilon_high as a ratio bound (losskit's 1 + epsilon_high) and its "
             "per-token value is -w A log pi (losskit's -w A, the surrogate at the sampled policy)"),
    Row("trl", "grad(lambda x: grpo_trainer('vespo', x))",
        "grad(lambda x: losskit.vespo(x, old, adv, mask, num_items_in_batch=n_tokens))",
        note="gradients: TRL's VESPO token value is -phi(w) A log pi, losskit's -phi(w) A (as for CISPO)"),
    Row("trl", "grpo_trainer('dapo', entropies=ent, top_entropy_quantile=0.2)",
        "losskit.grpo(logps, old, adv, mask, entropies=ent, top_entropy_quantile=0.2, epsilon_high=0.28, "
        "num_items_in_batch=n_tokens)",
        note="entropy masking (TRL's top_entropy_quantile, GRPOTrainer.get_high_entropy_mask): only the tokens at "
             "or above the (1 - q) entropy quantile keep their loss. TRL casts the entropies to float32 for the "
             "quantile: with float64 entropies a token exactly at the threshold can drop out of TRL's mask, so "
             "the setup's entropies are float32 (as a model's)"),
    Row("trl", "grpo_trainer('dapo', is_ratio=tis)",
        "losskit.grpo(logps, old, adv, mask, sampling_logps=sampling, epsilon_high=0.28, num_items_in_batch=n_tokens)",
        note="vLLM importance-sampling correction (TRL's vllm_importance_sampling_correction, mode "
             "'token_truncate', cap 3): losskit takes the sampler's log-probs and forms the ratio itself; TRL forms "
             "it inline while generating (no callable), so the setup repeats that formula (`tis`)"),
    Row("trl", "grpo_trainer('dapo', is_ratio=tis_mask)",
        "losskit.grpo(logps, old, adv, mask, sampling_logps=sampling, sampling_correction='token_mask', "
        "sampling_clip_min=0.5, sampling_clip_max=2.0, epsilon_high=0.28, num_items_in_batch=n_tokens)",
        note="TRL's vllm_importance_sampling_mode='token_mask' with vllm_importance_sampling_min / _max = 0.5 / 2: "
             "tokens whose ratio leaves the bounds get weight 0"),
    Row("trl", "reward_trainer()", "losskit.bradley_terry(r[:b], r[b:])",
        note="TRL's RewardTrainer takes a batch of b chosen then b rejected sequences and the model's scalar "
             "outputs; losskit takes the two (B,) reward vectors"),
    Row("trl", "reward_trainer(margin=rm_margin)", "losskit.bradley_terry(r[:b], r[b:], margin=rm_margin)",
        note="the dataset's `margin` column (Llama 2's preference strength)"),
    Row("trl", "reward_trainer(center=0.01)",
        "losskit.bradley_terry(r[:b], r[b:], center_rewards_coefficient=0.01)",
        note="RewardConfig(center_rewards_coefficient=0.01)"),
    Row("trl", "GKDTrainer.generalized_jsd_loss(s_logits, t_logits, gkd_labels, beta=0.3, temperature=2.0)",
        "losskit.gkd_loss(s_logits.transpose(1, 2), t_logits.transpose(1, 2), gkd_labels, beta=0.3, "
        "temperature=2.0)",
        note="losskit puts the vocabulary on axis 1 (TRL's (B, T, V) transposed); `target` with ignore_index=-100 "
             "is TRL's labels, and 'mean' over the counted tokens is TRL's 'batchmean' with labels"),
    Row("trl", "GKDTrainer.generalized_jsd_loss(s_logits, t_logits, gkd_labels, beta=0.0)",
        "losskit.gkd_loss(s_logits.transpose(1, 2), t_logits.transpose(1, 2), gkd_labels, beta=0.0)",
        note="beta = 0: the forward KL(teacher || student) (beta = 1: the reverse KL)"),
    Row("trl", "GKDTrainer.generalized_jsd_loss(s_logits, t_logits, beta=0.3)",
        "losskit.gkd_loss(s_logits.transpose(1, 2), t_logits.transpose(1, 2), beta=0.3)",
        relation="peer == losskit * 5",
        note="without labels TRL's 'batchmean' divides the token sum by the batch size B, losskit's 'mean' by the "
             "B * T tokens: a factor T (5 here)"),
    Row("trl", "GKDTrainer.generalized_jsd_loss(s_logits, t_logits, gkd_labels, beta=0.3)",
        "losskit.generalized_js_divergence(t_logits.transpose(1, 2), s_logits.transpose(1, 2), pi=0.3, dim=1, "
        "sample_weight=(gkd_labels != -100).double(), reduction='sum') / (gkd_labels != -100).sum()",
        note="GKD's JSD(beta) is the skew JS divergence with pi = beta and the teacher first"),
]


def available(section: Section) -> str | None:
    """None when the section's peers are importable, else the reason to skip."""
    missing = [m for m in section.modules if importlib.util.find_spec(m) is None]
    return f"{', '.join(missing)} not installed (the bench extra)" if missing else None


def evaluate(row: Row):
    """(lhs, rhs) of the row's relation, computed on the section's inputs."""
    import torch

    section = next(s for s in SECTIONS if s.key == row.section)
    ns: dict = {"__name__": "__migration__"}
    exec(compile(section.setup, f"<setup {section.key}>", "exec"), ns)
    values = {"peer": eval(row.peer_call, ns), "losskit": eval(row.losskit_call, ns)}
    rel = {**ns, **values}  # (a copy: the setup's functions keep seeing the losskit module)
    lhs, rhs = row.relation.split("==")

    def as_t(v):
        v = torch.as_tensor(v, dtype=torch.float64)
        return v.reshape(()) if v.numel() == 1 else v  # (POT returns some values as shape (1,))

    return as_t(eval(lhs, rel)), as_t(eval(rhs, rel))


def page() -> str:
    lines = ["# Migration", "",
             "<!-- generated by scripts/build_docs.py from scripts/migration_rows.py; do not edit -->", "",
             "From a peer library to losskit: one row per peer call. **Every row is a test** "
             "(`tests/test_migration.py`): it runs the section's setup, then the peer call and the losskit "
             "call on the same inputs, and checks the relation in the row (`peer == losskit` where the "
             "conventions agree; otherwise the relation the note explains). Rows whose peer is not "
             "installed are skipped with that reason.", ""]
    for s in SECTIONS:
        rows = [r for r in ROWS if r.section == s.key]
        lines += [f"## {s.title}", "", "Setup:", "", "```python", s.setup.rstrip(), "```", "",
                  "| peer call | losskit call | relation | note |", "|---|---|---|---|"]
        for r in rows:
            rel = "equal" if r.relation == "peer == losskit" else f"`{r.relation}`"
            lines.append(f"| `{_cell(r.peer_call)}` | `{_cell(r.losskit_call)}` | {_cell(rel)} | "
                         f"{_cell(_esc(r.note))} |")
        lines.append("")
    return "\n".join(lines)


def _cell(s: str) -> str:
    return " ".join(s.split()).replace("|", r"\|")


def _esc(s: str) -> str:
    return s.replace("<", "&lt;").replace(">", "&gt;").replace("*", r"\*").replace("_", r"\_")
