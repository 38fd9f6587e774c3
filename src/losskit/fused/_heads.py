"""Per-chunk heads of the fused pass: they read a ``(c, V)`` logits buffer and overwrite it with dL/dz.

Every reduction over the vocabulary (max, sum of exponentials, target logit, sum of logits) goes through
:func:`~losskit.fused._engine.all_reduce`, so the same head serves a vocabulary sharded across ranks.
"""

from __future__ import annotations

import math

import torch

from ._engine import all_reduce

__all__ = ["CrossEntropyHead", "DistillationHead"]


class CrossEntropyHead:
    """Cross-entropy with class weights, label smoothing, PaLM z-loss and logit soft-capping.

    Per token, with ``z' = s tanh(z / s)`` (soft-cap ``s``; ``z' = z`` without), ``lse = logsumexp z'``:

    ``l = (1 - eps) w_y (lse - z'_y) + eps / V * sum_k w_k (lse - z'_k) + lam * lse^2``

    and ``dl/dz'_k = p_k ((1 - eps) w_y + eps/V sum_j w_j + 2 lam lse) - (1 - eps) w_y [k = y] - eps/V w_k``.
    """

    stats = ("loss", "lse")

    def __init__(self, target, weight=None, label_smoothing=0.0, z_loss=0.0, softcap=None,
                 vocab_start=0, vocab_total=None, group=None):
        self.target, self.weight, self.eps = target, weight, float(label_smoothing)
        self.z_loss, self.softcap = float(z_loss), softcap
        self.vocab_start, self.vocab_total, self.group = vocab_start, vocab_total, group
        self.wsum = None
        if weight is not None:
            self.wsum = all_reduce(weight.sum().clone(), group)

    def __call__(self, z: torch.Tensor, idx: torch.Tensor, coef):
        c, vl = z.shape
        vt = self.vocab_total or vl
        w = None if self.weight is None else self.weight.to(z.dtype)
        y = self.target.index_select(0, idx) - self.vocab_start
        inshard = (y >= 0) & (y < vl)
        yl = y.clamp(0, vl - 1)
        dcap = None
        if self.softcap is not None:
            z.div_(self.softcap).tanh_()
            if coef is not None:
                dcap = 1 - z * z
            z.mul_(self.softcap)
        zero = z.new_zeros(())
        zy = all_reduce(torch.where(inshard, z.gather(1, yl[:, None]).squeeze(1), zero), self.group)
        if w is None:
            wy, wsum = None, float(vt)
        else:
            wy = all_reduce(torch.where(inshard, w.index_select(0, yl), zero), self.group)
            wsum = self.wsum.to(z.dtype)
        zs = None
        if self.eps > 0:
            zs = all_reduce(z.sum(1) if w is None else z @ w, self.group)
        m = all_reduce(z.amax(1), self.group, "max")
        z.sub_(m[:, None]).exp_()
        se = all_reduce(z.sum(1), self.group)
        lse = m + se.log()
        a_y = (1 - self.eps) if wy is None else (1 - self.eps) * wy
        loss = a_y * (lse - zy)
        if self.eps > 0:
            loss = loss + self.eps / vt * (wsum * lse - zs)
        if self.z_loss:
            loss = loss + self.z_loss * lse * lse
        if coef is not None:
            cl, cg = coef.get("loss"), coef.get("lse")
            a = torch.zeros_like(lse)
            if cl is not None:
                a = a + cl * (a_y + self.eps / vt * wsum + 2 * self.z_loss * lse)
            if cg is not None:
                a = a + cg
            z.mul_((a / se)[:, None])
            if cl is not None:
                hit = torch.where(inshard, cl * a_y, zero)
                z.scatter_add_(1, yl[:, None], -hit[:, None])
                if self.eps > 0:
                    if w is None:
                        z.sub_((cl * (self.eps / vt))[:, None])
                    else:
                        z.addr_(cl * (self.eps / vt), w, alpha=-1)
            if dcap is not None:
                z.mul_(dcap)
        return {"loss": loss, "lse": lse}


class DistillationHead:
    """Forward KL, reverse KL or skewed Jensen-Shannon between student and teacher softmax(z / T), times T^2.

    The teacher logits of the chunk are formed here (no gradient), in the student's compute dtype.
    """

    stats = ("loss",)

    def __init__(self, h_t, W_t, b_t, divergence="forward", beta=0.5, temperature=1.0, mm_dtype=None):
        self.h_t, self.W_t, self.b_t = h_t, W_t, b_t
        self.divergence, self.beta, self.T = divergence, float(beta), float(temperature)
        self.mm_dtype = mm_dtype

    def _teacher_logp(self, idx, dtype):
        mm = self.mm_dtype or dtype
        zt = self.h_t.index_select(0, idx).to(mm) @ self.W_t.to(mm).t()
        zt = zt.to(dtype)
        if self.b_t is not None:
            zt.add_(self.b_t.to(dtype))
        if self.T != 1.0:
            zt.div_(self.T)
        return zt.sub_(zt.logsumexp(1, keepdim=True))

    def __call__(self, z: torch.Tensor, idx: torch.Tensor, coef):
        T = self.T
        logpt = self._teacher_logp(idx, z.dtype)
        if T != 1.0:
            z.div_(T)
        z.sub_(z.logsumexp(1, keepdim=True))  # z holds log p_s
        logps = z
        ps = logps.exp()
        if self.divergence == "forward":
            pt = logpt.exp()
            loss = (pt * (logpt - logps)).sum(1)
            g = None
            if coef is not None:
                g = ps.sub_(pt)                                   # dD/ds = p_s - p_t
        elif self.divergence == "reverse":
            d = logps - logpt
            loss = (ps * d).sum(1)
            g = None
            if coef is not None:
                g = d.sub_(loss[:, None]).mul_(ps)                # p_s (log p_s - log p_t - D)
        else:
            b = self.beta
            logm = torch.logaddexp(logpt + math.log(b), logps + math.log1p(-b))
            pt = logpt.exp()
            loss = b * (pt * (logpt - logm)).sum(1) + (1 - b) * (ps * (logps - logm)).sum(1)
            g = None
            if coef is not None:
                gp = logps - logm                                 # dD/dp_s = (1 - b)(log p_s - log M)
                g = gp.sub_((ps * gp).sum(1, keepdim=True)).mul_(ps).mul_(1 - b)
        loss = loss * (T * T)
        if coef is not None:
            cl = coef.get("loss")
            if cl is None:
                z.zero_()
            else:
                torch.mul(g, (cl * T)[:, None], out=z)            # T^2 * (1/T) chain factor
        return {"loss": loss}
