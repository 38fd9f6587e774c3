"""Layer 4, imitation objectives for autoregressive models: SequenceMatch's inverse soft-Q loss on the logits.

An autoregressive model is a policy whose state is the prefix and whose action is the next token. SequenceMatch
(Cundy & Ermon 2023) reads the logits as soft Q-values, ``Q(s_t, a) = logits[t, a]`` with the soft value
``V(s_t) = logsumexp_a logits[t, a]``, and minimises an occupancy-measure divergence between the model's and the
data's state-action distributions through IQ-Learn's objective in Q alone (no discriminator, no adversarial
game). The backspace action of the paper is a token of the vocabulary and a transform of the training data
(sequences with an erroneous token followed by a backspace, and the masks that hide reverted tokens from the
model's inputs): it lives in the data pipeline, and this loss reads the resulting (state, action) pairs as any
others.
"""

from __future__ import annotations

import torch

from .._core import BadInput, Example, InputKind, Paper, finish, objective
from .._core.domains import POSITIVE, Choice, Real
from .._core.errors import fail
from .._core.validate import check_floating, describe, require

__all__ = ["sequence_match", "SequenceMatchLoss"]

SEQUENCEMATCH_PAPER = Paper("SequenceMatch: Imitation Learning for Autoregressive Sequence Modelling with "
                            "Backtracking", 2023, "2306.05426", "Cundy, Ermon")


def _transitions(name, logits, targets, mask, gamma):
    """Per token: ``r_t = Q(s_t, a_t) - gamma V(s_{t+1})`` and ``V(s_t) - gamma V(s_{t+1})``, and the mask."""
    check_floating(name, logits)
    if logits.dim() != 3:
        raise fail(name, "(B, T, V) logits: the model's next-token logits at each position", describe(logits))
    tname, mname = ("targets", "mask") if name == "logits" else ("sample_targets", "sample_mask")
    if not isinstance(targets, torch.Tensor) or targets.dtype.is_floating_point or targets.dtype == torch.bool \
            or targets.shape != logits.shape[:2]:
        raise fail(tname, f"a ({logits.shape[0]}, {logits.shape[1]}) integer tensor of the tokens taken",
                   describe(targets))
    if not isinstance(mask, torch.Tensor) or mask.shape != logits.shape[:2]:
        raise fail(mname, f"a ({logits.shape[0]}, {logits.shape[1]}) mask of the sequence's tokens", describe(mask))
    m = mask.bool()
    vocab = logits.shape[-1]
    t = targets.long()
    require(tname, t, lambda: (((t < 0) | (t >= vocab)) & m).any(), f"token ids in [0, {vocab})",
            lambda: "an id out of range")
    lg = torch.where(m[..., None], logits, 0.0)  # positions outside the mask are never read
    v = torch.logsumexp(lg, -1)
    require(name, v, lambda: (torch.isinf(v) & m).any(), "at least one finite logit at every position in the "
            "mask", lambda: "a position whose logits are all -inf")
    q = lg.gather(-1, torch.where(m, t, 0)[..., None])[..., 0]
    # s_{t+1} is terminal (done, V = 0) after a sequence's last token
    nxt = torch.cat([m[:, 1:], m.new_zeros(m.shape[0], 1)], 1)
    v_next = torch.where(nxt, torch.cat([v[:, 1:], v.new_zeros(v.shape[0], 1)], 1), 0.0)
    zero = logits.new_zeros(())
    r = torch.where(m, q - gamma * v_next, zero)
    dv = torch.where(m, v - gamma * v_next, zero)
    return r, dv, m


def _sm_example(gen, dtype, b=4, t=5, vocab=7):
    logits = 2 * torch.randn(b, t, vocab, generator=gen, dtype=torch.float64)
    targets = torch.randint(0, vocab, (b, t), generator=gen)
    mask = torch.arange(t)[None] < torch.tensor([5, 3, 1, 4])[:b, None]
    s_logits = 2 * torch.randn(3, t, vocab, generator=gen, dtype=torch.float64)
    s_targets = torch.randint(0, vocab, (3, t), generator=gen)
    s_mask = torch.arange(t)[None] < torch.tensor([4, 5, 2])[:, None]
    return Example({"logits": logits.to(dtype), "targets": targets, "mask": mask, "sample_logits": s_logits.to(dtype),
                    "sample_targets": s_targets, "sample_mask": s_mask}, {"alpha": 0.5, "gamma": 0.998},
                   grad=("logits", "sample_logits"))


def _sm_bad(ex):
    lg, tg, m = ex.inputs["logits"], ex.inputs["targets"], ex.inputs["mask"]
    return [BadInput("targets of another shape", ex.replace({"targets": tg[:, :-1]}), "targets"),
            BadInput("float targets", ex.replace({"targets": tg.to(lg.dtype)}), "targets"),
            BadInput("mask of another shape", ex.replace({"mask": m[:-1]}), "mask"),
            BadInput("a token id beyond the vocabulary", ex.replace({"targets": tg + lg.shape[-1]}), "targets"),
            BadInput("per-token log-probs for logits", ex.replace({"logits": lg[..., 0]}), "logits"),
            BadInput("sample targets of another shape",
                     ex.replace({"sample_targets": ex.inputs["sample_targets"][:-1]}), "sample_targets")]


SEQUENCE_LOGITS = InputKind("sequence logits", "(B, T, V) next-token logits of data sequences with their (B, T) "
                            "tokens and mask; optionally the same for sequences sampled from the model",
                            bad_inputs=_sm_bad, extreme=lambda ex: ex.map_floats(lambda x: x.float() * 1e3))


@objective("sequence_match", seed=True, family="preference", input_kind=SEQUENCE_LOGITS, example=_sm_example,
           paper=SEQUENCEMATCH_PAPER, per_sample=False, sample_weight=False, module_name="SequenceMatchLoss",
           domains={"alpha": POSITIVE, "gamma": Real(0.0, 1.0, lo_open=True), "divergence": Choice("chi2_mixture",
                                                                                                 "chi2")},
           formula="L = -E_data[r] + E_mix[V(s) - gamma V(s')] + 1/(4 alpha) E_mix[r^2],  "
                   "r = logit(s, a) - gamma V(s'),  V(s) = logsumexp logits(s)")
def sequence_match(logits, targets, mask, sample_logits=None, sample_targets=None, sample_mask=None, *,
                   alpha: float = 0.5, gamma: float = 0.998, divergence: str = "chi2_mixture",
                   reduction: str = "mean", return_metrics: bool = False):
    """SequenceMatch-chi^2: IQ-Learn's inverse soft-Q objective on an autoregressive model's logits.

    .. math:: L = -\\mathbb{E}_{\\rho_{data}}[r] + \\mathbb{E}_{\\rho_{mix}}[V(s) - \\gamma V(s')]
              + \\frac{1}{4\\alpha}\\,\\mathbb{E}_{\\rho_{\\chi}}[r^2],\\quad r = \\ell(a\\,|\\,s) - \\gamma V(s'),\\quad
              V(s) = \\log\\sum_a e^{\\ell(a|s)}

    The logits are the soft Q-function and ``r`` the implicit reward of each transition ``(s_t, a_t, s_{t+1})``
    (``V = 0`` after a sequence's last token: the terminal state). Expectations are means over transitions (tokens
    in ``mask``): ``rho_data`` over the data sequences (``logits``, ``targets``, ``mask``), ``rho_mix`` over the
    data and the model's own samples together (``sample_logits``, ``sample_targets``, ``sample_mask``: sequences
    generated by the model, scored by it; equal token counts make it the 1/2-1/2 mixture). ``divergence``:
    ``'chi2_mixture'`` (the paper's SequenceMatch-chi^2, whose regulariser ``rho_chi`` is the mixture: it weighs
    the model's out-of-distribution samples) or ``'chi2'`` (the regulariser on the data only). Without samples
    both expectations are over the data (IQ-Learn's offline ``value_expert``); then, and for any ``gamma``, the
    first two terms are exactly the token-level negative log-likelihood, so ``alpha -> inf`` is maximum
    likelihood. ``alpha > 0`` (IQ-Learn's and the paper's 0.5), ``gamma`` in (0, 1] (the discount).
    ``reduction='none'``: one term per sequence (data rows, then sample rows) whose mean is the loss.

    Computed as IQ-Learn's ``iq_loss`` (Div99/IQ-Learn ``iq_learn/iq.py``: ``method.type='iq'``, ``div='chi'``,
    ``loss='value'``, ``regularize`` for the mixture) with Q and V read from the logits: the tests check it
    against a port of that function. The SequenceMatch authors' code was not available here: the terminal-state
    convention (``V = 0`` after the last token, IQ-Learn's ``done``) and the samples' actions being the tokens
    they were generated with are IQ-Learn's. The backspace action is a data transform (a vocabulary token and the
    input masks of the reverted tokens), not a term of this loss. ``return_metrics=True`` adds the mean implicit
    reward of the data and of the samples. Paper: Cundy & Ermon, "SequenceMatch: Imitation Learning for
    Autoregressive Sequence Modelling with Backtracking", 2023, arXiv:2306.05426; Garg et al., "IQ-Learn:
    Inverse soft-Q Learning for Imitation", 2021, arXiv:2106.12142.
    """
    if divergence not in ("chi2_mixture", "chi2"):
        raise fail("divergence", "one of 'chi2_mixture', 'chi2'", repr(divergence))
    r_d, dv_d, m_d = _transitions("logits", logits, targets, mask, gamma)
    parts = [(r_d, dv_d, m_d)]
    given = [x is not None for x in (sample_logits, sample_targets, sample_mask)]
    if any(given) and not all(given):
        missing = ("sample_logits", "sample_targets", "sample_mask")[given.index(False)]
        raise fail(missing, "sample_logits, sample_targets and sample_mask together", "None")
    if all(given):
        if sample_logits.dim() == 3 and sample_logits.shape[-1] != logits.shape[-1]:
            raise fail("sample_logits", f"logits over the same vocabulary ({logits.shape[-1]})", describe(sample_logits))
        parts.append(_transitions("sample_logits", sample_logits, sample_targets, sample_mask, gamma))
    dtype = r_d.dtype
    n_data = m_d.sum().clamp_min(1).to(dtype)
    n_all = sum(m.sum() for _, _, m in parts).clamp_min(1).to(dtype)
    c = 1.0 / (4.0 * alpha)
    per_seq = []
    for k, (r, dv, m) in enumerate(parts):
        tok = dv / n_all
        if divergence == "chi2_mixture":
            tok = tok + c * r * r / n_all
        elif k == 0:
            tok = tok + c * r * r / n_data
        if k == 0:
            tok = tok - r / n_data
        per_seq.append(torch.where(m, tok, 0.0).sum(-1))
    per = torch.cat(per_seq) * sum(p.shape[0] for p in per_seq)
    out = finish(per, reduction)
    if not return_metrics:
        return out
    metrics = {"data_reward": (r_d.detach().sum() / n_data)}
    if len(parts) > 1:
        r_s, _, m_s = parts[1]
        metrics["sample_reward"] = r_s.detach().sum() / m_s.sum().clamp_min(1).to(dtype)
    return out, metrics


SequenceMatchLoss = sequence_match.Module
