"""Self-supervised objectives without negatives or with a learned assignment: BYOL / SimSiam negative
cosine, DINO self-distillation, SwAV swapped prediction (Sinkhorn-Knopp codes) and SigLIP's sigmoid
pairwise loss.

Multi-view inputs are batch first: ``(B, V, K)`` (sample, view, prototype / class). The reference codes
concatenate the views view-major, ``(V B, K)``: ``out.view(V, B, K).transpose(0, 1)`` converts.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .._core import Paper, check_reduction, fail, finish, objective
from .._core import distributed as D
from .._core.domains import COUNT, FLAG, POSITIVE, Choice, Integer, Real, Seq
from .._core.registry import BadInput, Example, InputKind
from .._core.validate import check_floating
from ..ops.pairwise import safe_sqrt, sq_dist
from ._inputs import scale_all
from .core import TEMPERATURE, check_temperature, embed

__all__ = ["negative_cosine", "dino", "dino_center", "swav", "swav_codes", "siglip", "koleo", "msn",
           "NegativeCosineLoss", "DINOLoss", "SwAVLoss", "SigLIPLoss", "KoLeoLoss", "MSNLoss"]

FAMILY = "representation"
SIMSIAM = Paper("Exploring Simple Siamese Representation Learning", 2021, "2011.10566", "Chen, He")
BYOL = Paper("Bootstrap your own latent: A new approach to self-supervised Learning", 2020, "2006.07733",
             "Grill et al.")
DINO = Paper("Emerging Properties in Self-Supervised Vision Transformers", 2021, "2104.14294", "Caron et al.")
SWAV = Paper("Unsupervised Learning of Visual Features by Contrasting Cluster Assignments", 2020, "2006.09882",
             "Caron, Misra, Mairal, Goyal, Bojanowski, Joulin")
SIGLIP = Paper("Sigmoid Loss for Language Image Pre-Training", 2023, "2303.15343", "Zhai, Mustafa, Kolesnikov, Beyer")


# ---------------------------------------------------------------------------------- input kinds
def _two(ex: Example):
    (a, x), (b, y) = list(ex.inputs.items())[:2]
    return a, x, b, y


def _pair_bad(ex: Example) -> list[BadInput]:
    a, x, b, y = _two(ex)
    yinf = y.clone()
    yinf.view(-1)[1] = float("inf")
    return [
        BadInput("batch size mismatch", ex.replace({b: y[:-1]}), b),
        BadInput("feature size mismatch", ex.replace({b: y[:, :-1]}), b),
        BadInput("no feature dimension", ex.replace({a: x[:, 0], b: y[:, 0]}), a),
        BadInput("integer embeddings", ex.replace({a: x.round().long()}), a),
        BadInput("+inf embedding", ex.replace({b: yinf}), b),
    ]


SIAMESE = InputKind("siamese pair", "two embedding batches (N, D) whose rows i are matched (prediction and "
                    "target, image and text)", bad_inputs=_pair_bad, extreme=scale_all())


def _siamese_example(names):
    def example(gen, dtype, n: int = 6, d: int = 5) -> Example:
        z1 = torch.randn(n, d, generator=gen, dtype=torch.float64)
        z2 = z1 + 0.7 * torch.randn(n, d, generator=gen, dtype=torch.float64)
        return Example({names[0]: z1.to(dtype), names[1]: z2.to(dtype)}, grad=names)
    return example


def _check_pair(names, x, y):
    for name, t in zip(names, (x, y)):
        check_floating(name, t)
    if x.dim() != 2:
        raise fail(names[0], "embeddings of shape (N, D)", f"shape {tuple(x.shape)}")
    if y.shape != x.shape:
        raise fail(names[1], f"embeddings of the shape of {names[0]} {tuple(x.shape)}", f"shape {tuple(y.shape)}")


def _views_bad(ex: Example) -> list[BadInput]:
    name, x = next(iter(ex.inputs.items()))
    out = [
        BadInput("no view dimension", ex.replace({name: x[:, 0]}), name),
        BadInput("integer scores", ex.replace({name: x.round().long()}), name),
    ]
    if "teacher_logits" in ex.inputs:
        t, c = ex.inputs["teacher_logits"], ex.inputs["center"]
        out += [BadInput("teacher of another batch", ex.replace({"teacher_logits": t[:-1]}), "teacher_logits"),
                BadInput("teacher of another width", ex.replace({"teacher_logits": t[..., :-1]}), "teacher_logits"),
                BadInput("center of another width", ex.replace({"center": c[:-1]}), "center")]
    return out


VIEW_SCORES = InputKind("view scores", "per-view scores or logits (B, V, K): batch, view, prototype (class)",
                        bad_inputs=_views_bad, extreme=scale_all(1e3))


# ------------------------------------------------------------------------------ negative cosine
@objective(
    "negative_cosine", family=FAMILY, input_kind=SIAMESE, paper=SIMSIAM, properties=set(),
    example=lambda g, d: (lambda ex: Example(ex.inputs, grad=("p",)))(_siamese_example(("p", "z"))(g, d)),
    module_name="NegativeCosineLoss", domains={"form": Choice("simsiam", "byol"), "stop_gradient": FLAG},
    formula="l_i = -cos(p_i, sg(z_i))  (SimSiam);  2 - 2 cos(p_i, sg(z_i))  (BYOL)",
)
def negative_cosine(p: torch.Tensor, z: torch.Tensor, *, form: str = "simsiam", stop_gradient: bool = True,
                    sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Negative cosine similarity of a prediction and a stop-gradient target (SimSiam, BYOL).

    .. math:: \\ell_i = -\\frac{\\langle p_i, \\mathrm{sg}(z_i)\\rangle}{\\|p_i\\| \\|z_i\\|}
              \\ (\\texttt{'simsiam'}),\\qquad \\ell_i = 2 - 2 \\frac{\\langle p_i, \\mathrm{sg}(z_i)\\rangle}
              {\\|p_i\\| \\|z_i\\|} = \\|\\hat p_i - \\hat z_i\\|^2\\ (\\texttt{'byol'})

    ``p`` (N, D): the online network's predictions; ``z`` (N, D): the targets (the other branch's projection
    in SimSiam, the momentum encoder's in BYOL), detached when ``stop_gradient`` (default; the papers'
    ``z.detach()``: no gradient reaches ``z``). The symmetrised losses are two calls:
    SimSiam ``(negative_cosine(p1, z2) + negative_cosine(p2, z1)) / 2``, BYOL the sum with ``form='byol'``.
    ``'none'`` returns (N,). Rows of norm 0 are normalised as ``F.normalize`` does (cosine 0).

    Papers: Chen, He, "Exploring Simple Siamese Representation Learning", 2021, arXiv:2011.10566; Grill et al.,
    "Bootstrap your own latent: A new approach to self-supervised Learning", 2020, arXiv:2006.07733.
    """
    check_reduction(reduction)
    _check_pair(("p", "z"), p, z)
    if form not in ("simsiam", "byol"):
        raise fail("form", "'simsiam' or 'byol'", repr(form))
    target = z.detach() if stop_gradient else z
    cos = (embed("p", p, True) * embed("z", target, True)).sum(-1)
    return finish(-cos if form == "simsiam" else 2 - 2 * cos, reduction, sample_weight=sample_weight)


# --------------------------------------------------------------------------------------------- DINO
def _dino_example(gen, dtype, b: int = 5, vs: int = 4, vt: int = 2, k: int = 6) -> Example:
    s = torch.randn(b, vs, k, generator=gen, dtype=torch.float64)
    t = s[:, :vt] + 0.5 * torch.randn(b, vt, k, generator=gen, dtype=torch.float64)
    c = 0.3 * torch.randn(k, generator=gen, dtype=torch.float64)
    return Example({"student_logits": s.to(dtype), "teacher_logits": t.to(dtype), "center": c.to(dtype)},
                   grad=("student_logits",), batched=("student_logits", "teacher_logits"))


@objective(
    "dino", family=FAMILY, input_kind=VIEW_SCORES, example=_dino_example, paper=DINO, properties={"nonnegative"},
    module_name="DINOLoss", domains={"student_temperature": POSITIVE, "teacher_temperature": POSITIVE},
    allow_neg_inf=(),
    formula="l_b = mean_{(i, v), v != i} H(softmax((t_bi - c) / tau_t), softmax(s_bv / tau_s))",
)
def dino(student_logits: torch.Tensor, teacher_logits: torch.Tensor, center: torch.Tensor, *,
         student_temperature: float = 0.1, teacher_temperature: float = 0.04,
         sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """DINO self-distillation: the student's views predict the centred, sharpened teacher's other views.

    .. math:: \\ell_b = \\frac{1}{|\\mathcal P|} \\sum_{(i, v) \\in \\mathcal P} -\\sum_k
              \\operatorname{softmax}\\Big(\\frac{t_{bi} - c}{\\tau_t}\\Big)_k
              \\log \\operatorname{softmax}\\Big(\\frac{s_{bv}}{\\tau_s}\\Big)_k,\\qquad
              \\mathcal P = \\{(i, v): i < V_t,\\ v < V_s,\\ v \\ne i\\}

    ``student_logits`` (B, V_s, K): the student's head outputs on every crop; ``teacher_logits`` (B, V_t, K),
    V_t <= V_s: the teacher's on the first V_t (global) crops, which are the student's first V_t views
    (the reference code's layout; ``out.view(V, B, K).transpose(0, 1)`` from its concatenated crops). The
    teacher is detached (no gradient). ``center`` (K,): the running centre of the teacher outputs, an
    *input* (state lives with the caller): update it after each step with :func:`dino_center`
    (``c <- m c + (1 - m) mean_b,i t_bi``, m = 0.9 in the paper). Temperatures > 0: student 0.1, teacher 0.04
    (the paper warms the teacher's up from 0.04 to 0.07; pass the scheduled value). ``'none'`` returns (B,);
    'mean' equals the authors' ``DINOLoss`` (facebookresearch/dino ``main_dino.py``). Needs V_s >= 2.

    Paper: Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", 2021, arXiv:2104.14294.
    """
    check_reduction(reduction)
    for name, x in (("student_logits", student_logits), ("teacher_logits", teacher_logits)):
        check_floating(name, x)
        if x.dim() != 3:
            raise fail(name, "logits of shape (B, V, K)", f"shape {tuple(x.shape)}")
    b, vs, k = student_logits.shape
    if vs < 2:
        raise fail("student_logits", "at least 2 student views", f"{vs}")
    t = teacher_logits
    if t.shape[0] != b or t.shape[2] != k or not 1 <= t.shape[1] <= vs:
        raise fail("teacher_logits", f"logits of shape ({b}, V_t, {k}) with 1 <= V_t <= {vs}", f"shape {tuple(t.shape)}")
    check_floating("center", center)
    if tuple(center.shape) not in ((k,), (1, k)):
        raise fail("center", f"a centre of shape ({k},)", f"shape {tuple(center.shape)}")
    q = torch.softmax((t.detach() - center.detach().reshape(1, 1, k)) / teacher_temperature, -1)  # (B, Vt, K)
    logp = torch.log_softmax(student_logits / student_temperature, -1)  # (B, Vs, K)
    ce = -torch.einsum("bik,bvk->biv", q, logp)  # (B, Vt, Vs)
    vt = t.shape[1]
    off = ~torch.eye(vt, vs, dtype=torch.bool, device=ce.device)
    per = torch.where(off, ce, ce.new_zeros(())).sum((1, 2)) / off.sum()
    return finish(per, reduction, sample_weight=sample_weight)


@torch.no_grad()
def dino_center(center: torch.Tensor, teacher_logits: torch.Tensor, momentum: float = 0.9, *,
                gather: bool = False, group=None) -> torch.Tensor:
    """DINO's centre update, ``momentum * center + (1 - momentum) * mean(teacher_logits)`` over every sample and
    view (of every rank with ``gather=True``); returns the new (K,) centre (no gradient)."""
    if not 0 <= momentum <= 1:
        raise fail("momentum", "a real number in [0, 1]", repr(momentum))
    t = teacher_logits.reshape(-1, teacher_logits.shape[-1])
    total, count = t.sum(0), torch.tensor(float(t.shape[0]), dtype=t.dtype, device=t.device)
    if gather:
        total, count = D.global_sum(total, group), D.global_sum(count, group)
    return momentum * center.reshape(-1) + (1 - momentum) * total / count


# --------------------------------------------------------------------------------------------- SwAV
@torch.no_grad()
def swav_codes(scores: torch.Tensor, epsilon: float = 0.05, iterations: int = 3) -> torch.Tensor:
    """SwAV's codes: ``iterations`` steps of Sinkhorn-Knopp on ``exp(scores / epsilon)`` (B, K), equal
    prototype marginals 1/K and equal sample marginals 1/B, ending with a column (sample) step; rows of the
    result sum to 1. Computed in the log domain (the reference code's ``exp(out / eps)`` overflows float32 for
    scores above ~4.4 at eps = 0.05; here nothing overflows), single process."""
    b, k = scores.shape
    logq = scores / epsilon
    logq = logq - torch.logsumexp(logq.reshape(-1), 0)
    for _ in range(iterations):
        logq = logq - torch.logsumexp(logq, 0, keepdim=True) - math.log(k)  # each prototype: mass 1/K
        logq = logq - torch.logsumexp(logq, 1, keepdim=True) - math.log(b)  # each sample: mass 1/B
    return (logq + math.log(b)).exp()


def _swav_example(gen, dtype, b: int = 6, v: int = 3, k: int = 4) -> Example:
    s = F.normalize(torch.randn(b, v, 5, generator=gen, dtype=torch.float64), dim=-1) @ \
        F.normalize(torch.randn(k, 5, generator=gen, dtype=torch.float64), dim=-1).T
    return Example({"scores": s.to(dtype)}, grad=("scores",))


@objective(
    "swav", family=FAMILY, input_kind=VIEW_SCORES, example=_swav_example, paper=SWAV, per_sample=False,
    properties={"nonnegative"}, module_name="SwAVLoss", gradcheck=False,
    domains={"temperature": TEMPERATURE, "epsilon": POSITIVE, "sinkhorn_iterations": COUNT,
             "crops_for_assign": Seq(Integer(0, None))},
    formula="l_b = mean_{i in assign} mean_{v != i} -sum_k q_bik log softmax(s_bv / tau)_k,  q = SK(s_i / eps)",
)
def swav(scores: torch.Tensor, *, temperature=0.1, epsilon: float = 0.05, sinkhorn_iterations: int = 3,
         crops_for_assign=(0, 1), sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """SwAV swapped prediction: each view predicts the Sinkhorn-Knopp codes of the assignment views.

    .. math:: \\ell_b = \\frac{1}{|A|} \\sum_{i \\in A} \\frac{1}{V - 1} \\sum_{v \\ne i} -\\sum_k q_{bik}
              \\log \\operatorname{softmax}\\Big(\\frac{s_{bv}}{\\tau}\\Big)_k,\\qquad
              q_{\\cdot i \\cdot} = \\operatorname{SK}\\big(e^{s_{\\cdot i \\cdot}/\\varepsilon}\\big)

    ``scores`` (B, V, K): the prototype scores ``<z_bv, c_k>`` of the normalised embeddings of V crops.
    The codes q of each view i in ``crops_for_assign`` A (views (0, 1), the global crops) are computed
    without a gradient by ``sinkhorn_iterations`` (3) steps of Sinkhorn-Knopp at ``epsilon`` (0.05) over the
    batch (:func:`swav_codes`, the authors' ``distributed_sinkhorn`` on one process, in the log domain:
    losskit's transport solvers are a layer above this family and solve to a tolerance, while SwAV's codes are
    defined by the few fixed iterations). ``temperature`` tau > 0 (0.1). The codes couple the batch, so this
    is batch-coupled (``'none'`` gives (B,)); 'mean' equals the authors' loss (facebookresearch/swav
    ``main_swav.py``, without the queue: append queued scores to the batch for the codes yourself).
    Declared ``gradcheck=False``: the codes are computed from ``scores`` without a gradient (the paper's), so
    the gradient is not the derivative of the value.

    Paper: Caron, Misra, Mairal, Goyal, Bojanowski, Joulin, "Unsupervised Learning of Visual Features by
    Contrasting Cluster Assignments", 2020, arXiv:2006.09882.
    """
    check_reduction(reduction)
    check_floating("scores", scores)
    if scores.dim() != 3 or scores.shape[1] < 2:
        raise fail("scores", "prototype scores of shape (B, V, K) with V >= 2 views", f"shape {tuple(scores.shape)}")
    tau = check_temperature(temperature)
    b, v, k = scores.shape
    assign = tuple(crops_for_assign)
    if not assign or any(not 0 <= i < v for i in assign):
        raise fail("crops_for_assign", f"view indices in [0, {v})", repr(crops_for_assign))
    logp = torch.log_softmax(scores / tau, -1)  # (B, V, K)
    per = scores.new_zeros(b)
    for i in assign:
        q = swav_codes(scores[:, i].detach(), epsilon, sinkhorn_iterations)  # (B, K)
        ce = -(q.unsqueeze(1) * logp).sum(-1)  # (B, V)
        others = torch.arange(v, device=scores.device) != i
        per = per + torch.where(others, ce, ce.new_zeros(())).sum(1) / (v - 1)
    return finish(per / len(assign), reduction, sample_weight=sample_weight)


# ------------------------------------------------------------------------------------------- SigLIP
def _peer(group, r: int) -> int:
    import torch.distributed as dist

    return r if group is None else dist.get_global_rank(group, r)


def _ring_shift(x: torch.Tensor, n_in: int, group) -> torch.Tensor:
    """Send ``x`` to the next rank of the ring and receive the previous rank's (``n_in`` rows)."""
    import torch.distributed as dist

    rank, ws = D.world(group)
    buf = x.new_empty((n_in,) + tuple(x.shape[1:]))
    ops = [dist.P2POp(dist.isend, x.contiguous(), _peer(group, (rank + 1) % ws), group),
           dist.P2POp(dist.irecv, buf, _peer(group, (rank - 1) % ws), group)]
    for req in dist.batch_isend_irecv(ops):
        req.wait()
    return buf


def _sigmoid_block(x, chunk, t, b, diagonal: bool):
    logits = t * (x @ chunk.T) + b
    sign = -torch.ones_like(logits)
    if diagonal:
        sign = torch.where(torch.eye(*logits.shape, dtype=torch.bool, device=logits.device), 1.0, sign)
    return logits, sign


class _RingSigmoid(torch.autograd.Function):
    """Per-row SigLIP losses of the local images against every rank's texts, the texts travelling around
    the ring one chunk per step (the paper's chunked implementation); the backward sends each chunk's
    gradient around with it, back to its owner."""

    @staticmethod
    def forward(ctx, x, y, t, b, group, sizes):
        rank, ws = D.world(group)
        per = x.new_zeros(x.shape[0])
        chunk, owner = y.detach(), rank
        for r in range(ws):
            logits, sign = _sigmoid_block(x, chunk, t, b, owner == rank)
            per = per - F.logsigmoid(sign * logits).sum(1)
            if r < ws - 1:
                owner = (owner - 1) % ws
                chunk = _ring_shift(chunk, sizes[owner], group)
        ctx.save_for_backward(x, y, t, b)
        ctx.group, ctx.sizes = group, sizes
        return per

    @staticmethod
    def backward(ctx, g):
        x, y, t, b = ctx.saved_tensors
        group, sizes = ctx.group, ctx.sizes
        rank, ws = D.world(group)
        chunk, gchunk, owner = y, torch.zeros_like(y), rank
        gx, gt, gb = torch.zeros_like(x), torch.zeros_like(t), torch.zeros_like(b)
        for r in range(ws):
            logits, sign = _sigmoid_block(x, chunk, t, b, owner == rank)
            dl = g.unsqueeze(1) * (-sign * torch.sigmoid(-sign * logits))  # d(-log sigmoid(s l)) / dl
            gx = gx + t * (dl @ chunk)
            gchunk = gchunk + t * (dl.T @ x)
            gt = gt + (dl * (x @ chunk.T)).sum()
            gb = gb + dl.sum()
            owner = (owner - 1) % ws
            if r < ws - 1:
                chunk = _ring_shift(chunk, sizes[owner], group)
            gchunk = _ring_shift(gchunk, sizes[owner], group)  # with its chunk; the last shift returns it home
        return gx, gchunk, gt, gb, None, None


LOGIT_SCALE = Real(0.0, None, lo_open=True, tensor=True)
LOGIT_BIAS = Real(None, None, tensor=True)


@objective(
    "siglip", family=FAMILY, input_kind=SIAMESE, example=_siamese_example(("image", "text")), paper=SIGLIP,
    per_sample=False, properties={"nonnegative"}, module_name="SigLIPLoss",
    domains={"logit_scale": LOGIT_SCALE, "logit_bias": LOGIT_BIAS, "normalize": FLAG, "ring": FLAG},
    formula="l_i = -sum_j log sigmoid(z_ij (t <x_i, y_j> + b)),  z_ij = 1 if i = j else -1",
)
def siglip(image: torch.Tensor, text: torch.Tensor, *, logit_scale=10.0, logit_bias=-10.0, normalize: bool = True,
           gather: bool = False, ring: bool = False, group=None, sample_weight: torch.Tensor | None = None,
           reduction: str = "mean") -> torch.Tensor:
    """SigLIP: an independent binary (sigmoid) loss on every image-text pair of the batch.

    .. math:: \\ell_i = -\\sum_j \\log \\sigma\\big(z_{ij} (t \\langle x_i, y_j\\rangle + b)\\big),\\qquad
              z_{ij} = \\begin{cases} 1 & i = j \\\\ -1 & i \\ne j \\end{cases}

    ``image``, ``text`` (N, D): row i of each is a matching pair (L2-normalised when ``normalize``).
    ``logit_scale`` t > 0 and ``logit_bias`` b: floats or (learnable) 0-dim tensors; the paper learns
    ``t = exp(t')`` from t' = log 10 and b from -10 (the defaults): pass ``t_prime.exp()``. 'mean' is the
    paper's ``-1/|B| sum_i sum_j``, the mean over images of the per-image sums (``'none'`` gives (N,)), as
    big_vision and open_clip's ``SigLipLoss``. ``gather=True``: every rank's images against all ranks' texts,
    the mean over every rank's images, exact value and gradients: by one all-gather of the text embeddings
    (memory O(N_local x N_global)), or with ``ring=True`` as the paper's chunked implementation, the text chunks
    passed around the ranks one step at a time (``world_size - 1`` exchanges; memory O(N_local^2); the backward
    sends each chunk's gradient around with it). ``ring`` has no effect without ``gather`` and a process group.

    Paper: Zhai, Mustafa, Kolesnikov, Beyer, "Sigmoid Loss for Language Image Pre-Training", 2023,
    arXiv:2303.15343.
    """
    check_reduction(reduction)
    _check_pair(("image", "text"), image, text)
    x, y = embed("image", image, normalize), embed("text", text, normalize)
    t = logit_scale.to(x.dtype) if isinstance(logit_scale, torch.Tensor) else logit_scale
    bias = logit_bias.to(x.dtype) if isinstance(logit_bias, torch.Tensor) else logit_bias
    if gather and ring and D.is_distributed(group):
        sizes = [int(v) for v in D.all_gather_nograd(torch.tensor([x.shape[0]], device=x.device), group).tolist()]
        per = _RingSigmoid.apply(x, y, torch.as_tensor(t, dtype=x.dtype, device=x.device),
                                 torch.as_tensor(bias, dtype=x.dtype, device=x.device), group, sizes)
        return finish(per, reduction, sample_weight=sample_weight, gathered=True, group=group)
    yc, offset = D.all_gather(y, group) if gather else (y, 0)
    logits = t * (x @ yc.T) + bias  # (n, M)
    rows = torch.arange(x.shape[0], device=x.device) + offset
    sign = torch.where(rows.unsqueeze(1) == torch.arange(yc.shape[0], device=x.device).unsqueeze(0), 1.0, -1.0)
    per = -F.logsigmoid(sign.to(logits.dtype) * logits).sum(1)
    return finish(per, reduction, sample_weight=sample_weight, gathered=gather, group=group)


NegativeCosineLoss = negative_cosine.Module
DINOLoss = dino.Module
SwAVLoss = swav.Module
SigLIPLoss = siglip.Module


# -------------------------------------------------------------------------------------------- KoLeo
KOLEO = Paper("Spreading vectors for similarity search", 2019, "1806.03198", "Sablayrolles, Douze, Schmid, Jegou")
MSN = Paper("Masked Siamese Networks for Label-Efficient Learning", 2022, "2204.07141", "Assran et al.")


def _embeddings_example(gen, dtype, n: int = 7, d: int = 4) -> Example:
    return Example({"embeddings": torch.randn(n, d, generator=gen, dtype=torch.float64).to(dtype)},
                   grad=("embeddings",))


def _embeddings_bad(ex: Example) -> list[BadInput]:
    x = ex.inputs["embeddings"]
    return [BadInput("no feature dimension", ex.replace({"embeddings": x[:, 0]}), "embeddings"),
            BadInput("a single embedding", ex.replace({"embeddings": x[:1]}), "embeddings"),
            BadInput("integer embeddings", ex.replace({"embeddings": x.round().long()}), "embeddings")]


EMBEDDINGS = InputKind("embeddings", "one batch of embeddings (N, D), N >= 2", bad_inputs=_embeddings_bad,
                       extreme=scale_all())


@objective(
    "koleo", family=FAMILY, input_kind=EMBEDDINGS, example=_embeddings_example, paper=KOLEO, per_sample=False,
    module_name="KoLeoLoss", domains={"eps": Real(0.0, None)},
    formula="l_i = -log(min_{j != i} ||x_i/|x_i| - x_j/|x_j||| + eps)",
)
def koleo(embeddings: torch.Tensor, *, eps: float = 1e-8, sample_weight: torch.Tensor | None = None,
          reduction: str = "mean") -> torch.Tensor:
    """KoLeo (Kozachenko-Leonenko) spreading regulariser: push each embedding away from its nearest neighbour.

    .. math:: \\ell_i = -\\log\\big(\\min_{j \\ne i} \\|\\hat x_i - \\hat x_j\\| + \\varepsilon\\big),\\qquad
              \\hat x = x / \\|x\\|

    The differential-entropy estimator of Kozachenko and Leonenko on the L2-normalised batch (up to
    constants), used as a regulariser by DINOv2 (weight 0.1) and lightly. ``eps`` >= 0 (1e-8, as
    DINOv2's ``KoLeoLoss``; it keeps coincident embeddings finite). The distance is exact (DINOv2's
    ``nn.PairwiseDistance(eps=1e-8)`` adds eps to every coordinate difference: 1e-8-relative differences).
    Batch-coupled (each term depends on the batch); ``'none'`` returns (N,). Needs N >= 2.

    Paper: Sablayrolles, Douze, Schmid, Jegou, "Spreading vectors for similarity search", 2019,
    arXiv:1806.03198.
    """
    check_reduction(reduction)
    check_floating("embeddings", embeddings)
    if embeddings.dim() != 2 or embeddings.shape[0] < 2:
        raise fail("embeddings", "embeddings of shape (N, D) with N >= 2", f"shape {tuple(embeddings.shape)}")
    x = embed("embeddings", embeddings, True)
    d2 = sq_dist(x, x, expand=False)
    eye = torch.eye(x.shape[0], dtype=torch.bool, device=x.device)
    nearest = safe_sqrt(torch.where(eye, d2.new_full((), 5.0), d2).amin(1))  # unit vectors: d^2 <= 4 < 5
    return finish(-torch.log(nearest + eps), reduction, sample_weight=sample_weight)


# ---------------------------------------------------------------------------------------------- MSN
def _msn_example(gen, dtype, b: int = 5, v: int = 2, d: int = 4, k: int = 6) -> Example:
    t = torch.randn(b, d, generator=gen, dtype=torch.float64)
    a = t.unsqueeze(1) + 0.5 * torch.randn(b, v, d, generator=gen, dtype=torch.float64)
    p = torch.randn(k, d, generator=gen, dtype=torch.float64)
    # the gradient w.r.t. the prototypes is not the derivative of the value (their target branch is
    # stop-gradient): the float64 gradcheck runs on the anchors; the tests compare both with lightly's
    return Example({"anchors": a.to(dtype), "targets": t.to(dtype), "prototypes": p.to(dtype)},
                   grad=("anchors",), batched=("anchors", "targets"))


def _msn_bad(ex: Example) -> list[BadInput]:
    a, t, p = (ex.inputs[k] for k in ("anchors", "targets", "prototypes"))
    return [BadInput("anchors without a view dimension", ex.replace({"anchors": a[:, 0]}), "anchors"),
            BadInput("targets of another batch", ex.replace({"targets": t[:-1]}), "targets"),
            BadInput("prototypes of another width", ex.replace({"prototypes": p[:, :-1]}), "prototypes"),
            BadInput("integer anchors", ex.replace({"anchors": a.round().long()}), "anchors")]


MSN_INPUTS = InputKind("anchors+targets+prototypes", "anchor views (B, V, D), target embeddings (B, D) and "
                       "prototypes (K, D)", bad_inputs=_msn_bad, extreme=scale_all())


@objective(
    "msn", family=FAMILY, input_kind=MSN_INPUTS, example=_msn_example, paper=MSN, per_sample=False,
    batch_scalar=True, sample_weight=False, properties={"nonnegative"}, module_name="MSNLoss",
    domains={"temperature": TEMPERATURE, "sharpen_temperature": POSITIVE, "sinkhorn_iterations": Integer(0, None),
             "regularization_weight": Real(0.0, None)},
    formula="L = mean_{b,v} H(q_b, p_bv) + lambda (log K - H(mean_{b,v} p_bv)),  p = softmax(cos(a, P) / tau), "
            "q = SK(sharpen(softmax(cos(t, P) / tau), T))",
)
def msn(anchors: torch.Tensor, targets: torch.Tensor, prototypes: torch.Tensor, *, temperature=0.1,
        sharpen_temperature: float = 0.25, sinkhorn_iterations: int = 3, regularization_weight: float = 1.0,
        reduction: str = "mean") -> torch.Tensor:
    """MSN (masked siamese networks): masked anchor views predict the sharpened prototype assignment of the target.

    .. math:: \\mathcal L = \\frac{1}{BV} \\sum_{b, v} H(q_b, p_{bv}) + \\lambda \\big(\\log K -
              H(\\bar p)\\big),\\qquad p_{bv} = \\operatorname{softmax}\\Big(\\frac{\\langle \\hat a_{bv},
              \\hat P\\rangle}{\\tau}\\Big),\\quad \\bar p = \\frac{1}{BV} \\sum_{b,v} p_{bv}

    ``anchors`` (B, V, D): the V (masked) anchor views of each sample; ``targets`` (B, D): the target
    encoder's output (no gradient); ``prototypes`` (K, D), an input (the Module holds none; their gradient comes
    from the anchor branch only, the target branch being stop-gradient as in the paper). The targets'
    prototype probabilities are sharpened (``p^(1/T)``, ``sharpen_temperature`` T > 0, 0.25) and balanced by
    ``sinkhorn_iterations`` (3; 0 disables) of Sinkhorn-Knopp over the batch (:func:`swav_codes`, log
    domain), without a gradient. The mean-entropy-maximisation term (``regularization_weight`` lambda >= 0,
    1) is ``KL(p_bar || uniform)``. Cosine similarities; ``temperature`` tau > 0 (0.1). A batch-level loss
    (every reduction returns the one value). lightly's ``MSNLoss`` (``anchors`` view-major ``(V B, D)``:
    ``anchors.transpose(0, 1).reshape(-1, D)``) gives the same value.

    Paper: Assran et al., "Masked Siamese Networks for Label-Efficient Learning", 2022, arXiv:2204.07141.
    """
    check_reduction(reduction)
    for name, x in (("anchors", anchors), ("targets", targets), ("prototypes", prototypes)):
        check_floating(name, x)
    if anchors.dim() != 3:
        raise fail("anchors", "anchor views of shape (B, V, D)", f"shape {tuple(anchors.shape)}")
    b, v, d = anchors.shape
    if tuple(targets.shape) != (b, d):
        raise fail("targets", f"targets of shape ({b}, {d})", f"shape {tuple(targets.shape)}")
    if prototypes.dim() != 2 or prototypes.shape[1] != d:
        raise fail("prototypes", f"prototypes of shape (K, {d})", f"shape {tuple(prototypes.shape)}")
    tau = check_temperature(temperature)
    protos = embed("prototypes", prototypes, True)
    logp = torch.log_softmax(embed("anchors", anchors, True) @ protos.T / tau, -1)  # (B, V, K)
    with torch.no_grad():
        t_logp = torch.log_softmax(embed("targets", targets, True) @ protos.T / tau, -1)
        q = swav_codes(torch.log_softmax(t_logp / sharpen_temperature, -1), 1.0, sinkhorn_iterations)  # (B, K)
    ce = -(q.unsqueeze(1) * logp).sum(-1).mean()
    if regularization_weight == 0:
        return ce
    log_mean = torch.logsumexp(logp.reshape(-1, logp.shape[-1]), 0) - math.log(b * v)  # log p_bar
    neg_entropy = (log_mean.exp() * log_mean).sum()
    return ce + regularization_weight * (math.log(logp.shape[-1]) + neg_entropy)


KoLeoLoss = koleo.Module
MSNLoss = msn.Module
