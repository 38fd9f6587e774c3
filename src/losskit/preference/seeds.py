"""Layer 3, the seed papers' heads: DDO, D2O, CPL, SparsePO, EGPO, Nash-MP, MNPO, APO, MAPL, DisCO.

Each is written on the scores of layer 2 and, where it is a pairwise margin head, on
:func:`~losskit.preference.heads.margin_loss`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F

from .._core import BadInput, Example, InputKind, Paper, objective, reduce
from .._core.errors import fail
from .._core.validate import check_floating, check_sample_weight, describe
from ._inputs import GROUP_SCORES, PAIR_SCORES, group_example, pair_example, scale_logps
from .heads import _finish, _reference_free, _scores, margin_loss, pair_rewards
from .scores import geometric_anchor

__all__ = ["ddo", "d2o", "cpl", "sparsepo", "egpo", "extragradient_step", "nash_mp", "mnpo", "apo", "mapl",
           "disco", "disco_b"]

FAMILY = "preference"


def _prob(gen, n):
    return torch.rand(n, generator=gen, dtype=torch.float64)


def _reg(name, paper, formula, *, ref=True, extras=None, options=None, chosen_shape=(), **kw):
    return objective(name, family=FAMILY, input_kind=PAIR_SCORES, paper=paper, formula=formula,
                     example=pair_example(ref=ref, extras=extras, options=options, chosen_shape=chosen_shape),
                     **kw)


# ----------------------------------------------------------------------------------------------- DDO
DDO_PAPER = Paper("Direct Discriminative Optimization: Your Likelihood-Based Visual Generative Model is Secretly "
                  "a GAN Discriminator", 2025, "2503.01103", "Zheng, Chen, Wang, Zhang, Lin, Liu, Vahdat, Karras")


@_reg("ddo", DDO_PAPER, "L = -log sigma(beta u(x)) - alpha log(1 - sigma(beta u(x'))),  x ~ data, x' ~ pi_ref")
def ddo(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, *, beta: float = 1.0,
        alpha: float = 1.0, sample_weight=None, reduction: str = "mean", return_metrics: bool = False):
    """Direct Discriminative Optimization: the likelihood ratio to the reference as a GAN discriminator.

    .. math:: L = -\\log\\sigma(\\beta u(x)) - \\alpha\\log(1 - \\sigma(\\beta u(x'))),\\quad
              u = \\ell_\\theta - \\ell_{ref}

    "chosen" are data samples x, "rejected" are samples x' drawn from the reference model (unpaired: row i
    pairs one of each). ``log(1 - sigma(z)) = logsigmoid(-z)``. With ``alpha = beta = 1`` the population
    optimum over all distributions is ``pi_theta = p_data``. Paper: Zheng et al., "Direct Discriminative
    Optimization: Your Likelihood-Based Visual Generative Model is Secretly a GAN Discriminator", 2025,
    arXiv:2503.01103.
    """
    u_w, u_l = pair_rewards(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    loss = -F.logsigmoid(beta * u_w) - alpha * F.logsigmoid(-beta * u_l)
    return _finish(loss, reduction, sample_weight, return_metrics, beta * u_w, beta * u_l)


# ----------------------------------------------------------------------------------------------- D2O
D2O_PAPER = Paper("Negating Negatives: Alignment without Human Positive Samples via Distributional Dispreference "
                  "Optimization", 2024, "2403.03419", "Duan, Yi, Zhang, Lu, Xie, Gu")


@_reg("d2o", D2O_PAPER, "L = -log sigma((beta/K) sum_i u(y_i) - alpha u(y_l))", chosen_shape=(3,))
def d2o(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, *, beta: float = 0.1,
        alpha: float = 0.1, sample_weight=None, reduction: str = "mean", return_metrics: bool = False):
    """D2O: distributional dispreference optimisation, K self-generated samples against a human negative.

    .. math:: L = -\\log\\sigma\\Big(\\frac{\\beta}{K}\\sum_{i\\le K} u(y_i) - \\alpha\\,u(y_l)\\Big),\\quad
              u = \\ell - \\ell_{ref}

    ``policy_chosen_logps`` / ``ref_chosen_logps``: ``(B, K)`` scores of the K self-samples (or ``(B,)``
    for K = 1); rejected: ``(B,)`` human negatives. K = 1 and ``alpha = beta`` is :func:`dpo`. The paper uses
    K = 11, alpha = beta = 0.1. Paper: Duan et al., "Negating Negatives: Alignment without Human Positive
    Samples via Distributional Dispreference Optimization", 2024, arXiv:2403.03419.
    """
    pc, rc = policy_chosen_logps, ref_chosen_logps
    check_floating("policy_chosen_logps", pc)
    if pc.dim() not in (1, 2):
        raise fail("policy_chosen_logps", "(B,) or (B, K) self-sample scores", describe(pc))
    pc2 = pc.reshape(pc.shape[0], -1)
    if not isinstance(rc, torch.Tensor) or rc.shape != pc.shape:
        raise fail("ref_chosen_logps", f"the shape of policy_chosen_logps {tuple(pc.shape)}", describe(rc))
    pos = (pc2 - rc.reshape(pc2.shape)).mean(-1)
    _, u_l = pair_rewards(pos, policy_rejected_logps, torch.zeros_like(pos), ref_rejected_logps)
    loss = margin_loss(beta * pos - alpha * u_l)
    return _finish(loss, reduction, sample_weight, return_metrics, beta * pos, alpha * u_l)


# ----------------------------------------------------------------------------------------------- CPL
CPL_PAPER = Paper("Contrastive Preference Learning: Learning from Human Feedback without RL", 2024, "2310.13639",
                  "Hejna, Rafailov, Sikchi, Finn, Niekum, Knox, Sadigh")


@_reg("cpl", CPL_PAPER, "L = -log sigma(beta s+ - lam beta s-) + bc_weight (-s+),  s = sum_t gamma^t log pi",
      ref=False)
def cpl(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps=None,
        ref_rejected_logps=None, *, beta: float = 0.1, lam: float = 1.0,
        bc_weight: float = 0.0, sample_weight=None, reduction: str = "mean", return_metrics: bool = False):
    """Contrastive Preference Learning: regret-based preferences scored by discounted log-likelihoods.

    .. math:: L = -\\log\\sigma\\Big(\\alpha\\sum_t\\gamma^t\\log\\pi(a^+_t|s^+_t)
              - \\lambda\\,\\alpha\\sum_t\\gamma^t\\log\\pi(a^-_t|s^-_t)\\Big) - w_{bc}\\,s^+

    ``beta`` is the paper's temperature alpha; feed discounted scores (``aggregation='discounted'``,
    ``gamma``). ``lam < 1`` is the paper's conservative bias; ``lam = 1`` with gamma = 1 is reference-free
    DPO. ``bc_weight`` adds the optional behaviour-cloning term on the positive segment. Paper: Hejna et al.,
    "Contrastive Preference Learning: Learning from Human Feedback without RL", 2024, arXiv:2310.13639.
    """
    _reference_free(ref_chosen_logps, ref_rejected_logps)
    pc, pr = pair_rewards(policy_chosen_logps, policy_rejected_logps)
    if lam < 0:
        raise fail("lam", "a non-negative bias", repr(lam))
    loss = margin_loss(beta * (pc - lam * pr)) - bc_weight * pc
    return _finish(loss, reduction, sample_weight, return_metrics, beta * pc, beta * lam * pr)


# ------------------------------------------------------------------------------------------ SparsePO
SPARSEPO_PAPER = Paper("SparsePO: Controlling Preference Alignment of LLMs via Sparse Token Masks", 2024,
                       "2410.05102", "Christopoulou, Cardenas, Lampouras, Bou-Ammar, Wang")


def _sparse_example(gen, dtype, b=5, t=6):
    def lr():
        return 0.5 * torch.randn(b, t, generator=gen, dtype=torch.float64)

    def kl():
        return 0.2 * torch.rand(b, t, generator=gen, dtype=torch.float64)

    lengths_w, lengths_l = torch.tensor([6, 3, 1, 5, 2]), torch.tensor([4, 6, 2, 1, 6])
    ar = torch.arange(t)[None]
    inputs = {"chosen_logratios": lr(), "rejected_logratios": lr(), "chosen_kl": kl(), "rejected_kl": kl(),
              "chosen_mask": ar < lengths_w[:, None], "rejected_mask": ar < lengths_l[:, None]}
    inputs = {k: v.to(dtype) if v.is_floating_point() else v for k, v in inputs.items()}
    return Example(inputs, {}, grad=("chosen_logratios", "rejected_logratios", "chosen_kl", "rejected_kl"))


def _sparse_bad(ex):
    i = ex.inputs
    return [BadInput("sequence scores instead of per-token ratios",
                     ex.replace({"chosen_logratios": i["chosen_logratios"][:, 0]}), "chosen_logratios"),
            BadInput("KL of another shape", ex.replace({"rejected_kl": i["rejected_kl"][:, :-1]}), "rejected_kl"),
            BadInput("mask of another shape", ex.replace({"chosen_mask": i["chosen_mask"][:-1]}), "chosen_mask")]


def _sparse_extreme(ex):
    ex = ex.map_floats(lambda t: t.float())
    return ex.replace({k: v * 2e3 for k, v in ex.inputs.items() if k.endswith(("logratios", "kl"))})


SPARSE_TOKENS = InputKind("token log-ratios", "(B, T) per-token log-ratios and full-vocabulary KLs with masks",
                          bad_inputs=_sparse_bad, extreme=_sparse_extreme)


def _tokens(name, x, shape):
    check_floating(name, x)
    if x.dim() != 2 or (shape is not None and tuple(x.shape) != tuple(shape)):
        raise fail(name, f"a (B, T) per-token tensor{'' if shape is None else ' of shape ' + str(tuple(shape))}",
                   describe(x))
    return x


@objective("sparsepo", family=FAMILY, input_kind=SPARSE_TOKENS, example=_sparse_example, paper=SPARSEPO_PAPER,
           formula="L = -log sigma(beta sum_t m^u_t u_t(y_w) - beta sum_t m^u_t u_t(y_l) "
                   "- beta [sum_t m^d_t KL_t(y_l) - sum_t m^d_t KL_t(y_w)])")
def sparsepo(chosen_logratios, rejected_logratios, chosen_kl, rejected_kl, chosen_mask, rejected_mask, *,
             beta: float = 0.1, chosen_reward_mask=None, rejected_reward_mask=None, chosen_kl_mask=None,
             rejected_kl_mask=None, sample_weight=None, reduction: str = "mean", return_metrics: bool = False):
    """SparsePO: token-level DPO (TDPO-style KL term) with sparse token masks on rewards and KLs.

    .. math:: L = -\\log\\sigma\\Big(\\beta\\sum_t m^u_t u_t(y_w) - \\beta\\sum_t m^u_t u_t(y_l)
              - \\beta\\big[\\sum_t m^d_t \\mathrm{KL}_t(y_l) - \\sum_t m^d_t \\mathrm{KL}_t(y_w)\\big]\\Big)

    ``*_logratios``: per-token ``log pi - log pi_ref`` (B, T); ``*_kl``: per-token full-vocabulary
    ``KL(pi_ref || pi)`` (:func:`~losskit.preference.token_logprobs` with ``anchor_logits``); masks m^u, m^d in
    [0, 1] (B, T), by default the completion masks (the paper learns them or derives them from activations:
    compute them outside and pass them). Masked tokens are never read. Detail not verified against the
    paper's code (the sign convention of the KL term follows TDPO). Paper: Christopoulou et al., "SparsePO:
    Controlling Preference Alignment of LLMs via Sparse Token Masks", 2024, arXiv:2410.05102.
    """
    cw = _tokens("chosen_logratios", chosen_logratios, None)
    cl = _tokens("rejected_logratios", rejected_logratios, None)
    if cl.shape[0] != cw.shape[0]:
        raise fail("rejected_logratios", f"a batch of {cw.shape[0]}", describe(cl))
    _tokens("chosen_kl", chosen_kl, cw.shape)
    _tokens("rejected_kl", rejected_kl, cl.shape)
    for name, m, ref in (("chosen_mask", chosen_mask, cw), ("rejected_mask", rejected_mask, cl)):
        if not isinstance(m, torch.Tensor) or m.shape != ref.shape:
            raise fail(name, f"a (B, T) mask of shape {tuple(ref.shape)}", describe(m))

    def total(x, mask, weights):
        w = mask.to(x.dtype) if weights is None else weights * mask
        return torch.where(mask.bool(), x * w, x.new_zeros(())).sum(-1)

    r_w = beta * total(cw, chosen_mask, chosen_reward_mask)
    r_l = beta * total(cl, rejected_mask, rejected_reward_mask)
    kl_term = beta * (total(rejected_kl, rejected_mask, rejected_kl_mask) - total(chosen_kl, chosen_mask,
                                                                                   chosen_kl_mask))
    loss = margin_loss(r_w - r_l - kl_term)
    return _finish(loss, reduction, sample_weight, return_metrics, r_w, r_l)


# ---------------------------------------------------------------------------------------------- EGPO
EGPO_PAPER = Paper("Extragradient Preference Optimization (EGPO): Beyond Last-Iterate Convergence for Nash "
                   "Learning from Human Feedback", 2025, "2503.08942", "Zhou, Li, Wang, Sun")


@_reg("egpo", EGPO_PAPER, "L = ([u(y) - u(y')] - [P(y > y'') - P(y' > y'')] / beta)^2",
      extras={"chosen_preference": _prob, "rejected_preference": _prob})
def egpo(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, chosen_preference,
         rejected_preference, *, beta: float = 0.1, sample_weight=None, reduction: str = "mean",
         return_metrics: bool = False):
    """EGPO's online IPO loss: regress the log-ratio margin onto the preference-probability gap over beta.

    .. math:: L = \\Big([u(y) - u(y')] - \\frac{P(y \\succ y'') - P(y' \\succ y'')}{\\beta}\\Big)^2

    y, y' ("chosen"/"rejected": the two on-policy samples, in either order) and a third sample y'' from the
    opponent; ``*_preference`` are the preference model's ``P(y > y'')`` and ``P(y' > y'')``. EGPO minimises it
    with an extragradient step: :func:`extragradient_step`. Paper: Zhou et al., "Extragradient Preference
    Optimization (EGPO): Beyond Last-Iterate Convergence for Nash Learning from Human Feedback", 2025,
    arXiv:2503.08942.
    """
    u_w, u_l = pair_rewards(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    n = u_w.shape[0]
    pw, pl = _scores("chosen_preference", chosen_preference, n), _scores("rejected_preference",
                                                                         rejected_preference, n)
    loss = ((u_w - u_l) - (pw - pl) / beta) ** 2
    return _finish(loss, reduction, sample_weight, return_metrics, beta * u_w, beta * u_l)


def extragradient_step(params: Iterable[torch.Tensor], loss_fn: Callable[[], torch.Tensor], lr: float) -> None:
    """One extragradient (mirror-prox with Euclidean geometry) step, in place.

    ``theta_half = theta - lr * grad L(theta)``; ``theta <- theta - lr * grad L(theta_half)``. ``loss_fn()``
    recomputes the loss at the current parameters (for EGPO: resample or rescore at the half step). For a
    bilinear game this converges where plain gradient descent-ascent cycles.
    """
    params = [p for p in params]
    start = [p.detach().clone() for p in params]
    grads = torch.autograd.grad(loss_fn(), params)
    with torch.no_grad():
        for p, g in zip(params, grads):
            p.sub_(lr * g)
    grads = torch.autograd.grad(loss_fn(), params)
    with torch.no_grad():
        for p, s, g in zip(params, start, grads):
            p.copy_(s - lr * g)


# ------------------------------------------------------------------------------------------- Nash-MP
NASHMP_PAPER = Paper("Accelerating Nash Learning from Human Feedback via Mirror Prox", 2025, "2505.19731",
                     "Tiapkin et al.")


def _nash_example(gen, dtype, n=6):
    lp = -(0.5 + 5 * torch.rand(3, n, generator=gen, dtype=torch.float64))
    return Example({"policy_logps": lp[0].to(dtype), "preference": _prob(gen, n).to(dtype),
                    "ref_logps": lp[1].to(dtype), "prev_logps": lp[2].to(dtype)}, {"beta": 0.1, "eta": 2.0},
                   grad=("policy_logps",))


def _nash_bad(ex):
    return [BadInput("preference of another length", ex.replace({"preference": ex.inputs["preference"][:-1]}),
                     "preference"),
            BadInput("per-token log-probs", ex.replace({"policy_logps": ex.inputs["policy_logps"][:, None]}),
                     "policy_logps")]


ON_POLICY = InputKind("on-policy samples", "(B,) sequence log-probs of samples y ~ pi_theta with their "
                      "preferences and the anchors' log-probs", bad_inputs=_nash_bad, extreme=scale_logps())


@objective("nash_mp", family=FAMILY, input_kind=ON_POLICY, example=_nash_example, paper=NASHMP_PAPER,
           gradcheck=False, why_no_gradcheck="a score-function surrogate: its gradient is sg(w) grad l by design, "
           "not the derivative of its value (tests check the expected gradient on a tabular policy)",
           formula="J = -E[(P(y > y') - 1/2)] + beta KL(pi || pi_ref) + (1/eta) KL(pi || pi_k); "
                   "grad = E[w grad log pi],  w = -(P - 1/2) + beta (l - l_ref) + (l - l_k)/eta")
def nash_mp(policy_logps, preference, ref_logps, prev_logps, *, beta: float = 0.1, eta: float = 1.0,
            sample_weight=None, reduction: str = "mean"):
    """Nash-MP's regularised self-play objective as a score-function surrogate (one mirror-prox step).

    .. math:: J(\\pi) = -\\mathbb{E}_{y\\sim\\pi}[P(y\\succ y') - \\tfrac12] + \\beta\\,\\mathrm{KL}(\\pi\\|\\pi_{ref})
              + \\tfrac1\\eta\\mathrm{KL}(\\pi\\|\\pi_k)

    For samples ``y ~ pi_theta`` with ``P(y > y')`` against the opponent (``pi_k`` or its half-step), each
    sample's loss has the value ``w = -(P - 1/2) + beta (l - l_ref) + (l - l_k)/eta`` (an estimate of J's
    integrand) and the gradient ``sg(w) grad l``, whose expectation is the exact gradient of J (the score
    function's mean is 0, so KL's "+1" is dropped). A mirror-prox step applies it twice: at pi_k for the half
    step, then at the half step's opponent. Detail not verified against the paper's code. Paper: Tiapkin et
    al., "Accelerating Nash Learning from Human Feedback via Mirror Prox", 2025, arXiv:2505.19731.
    """
    lp = _scores("policy_logps", policy_logps)
    n = lp.shape[0]
    p = _scores("preference", preference, n)
    w = (-(p - 0.5) + beta * (lp - _scores("ref_logps", ref_logps, n))
         + (lp - _scores("prev_logps", prev_logps, n)) / eta).detach()
    loss = w + w * (lp - lp.detach())
    return reduce(loss, reduction, weight=check_sample_weight(sample_weight, loss.shape))


# ---------------------------------------------------------------------------------------------- MNPO
MNPO_PAPER = Paper("Multiplayer Nash Preference Optimization", 2025, "2509.23102", "Wu et al.")


def _opp(gen, n, j=2):
    return -(0.5 + 5 * torch.rand(n, j, generator=gen, dtype=torch.float64))


@_reg("mnpo", MNPO_PAPER, "L = (h - 1/(2 beta))^2,  h = [l_w - l_l] - rho [lref_w - lref_l] "
      "- (1 - rho) sum_j lambda_j [lj_w - lj_l]",
      extras={"opponent_chosen_logps": _opp, "opponent_rejected_logps": _opp}, options={"rho": 0.5})
def mnpo(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
         opponent_chosen_logps=None, opponent_rejected_logps=None, *, beta: float = 0.1, rho: float = 1.0,
         weights=None, sample_weight=None, reduction: str = "mean", return_metrics: bool = False):
    """MNPO: IPO against a geometric mixture of the reference and J opponent policies.

    .. math:: L = \\Big(h - \\frac{1}{2\\beta}\\Big)^2,\\quad h = [\\ell_w - \\ell_l]
              - \\rho[\\ell^{ref}_w - \\ell^{ref}_l] - (1-\\rho)\\sum_j\\lambda_j[\\ell^{(j)}_w - \\ell^{(j)}_l]

    ``opponent_*_logps``: ``(B, J)`` scores under the opponents (past iterates); ``weights`` lambda_j
    (default uniform). ``rho = 1`` is :func:`ipo` (``beta`` is the paper's eta). The anchor is
    :func:`~losskit.preference.geometric_anchor`. Detail not verified against the paper's code. Paper: Wu et
    al., "Multiplayer Nash Preference Optimization", 2025, arXiv:2509.23102.
    """
    pc = _scores("policy_chosen_logps", policy_chosen_logps)
    n = pc.shape[0]
    for name, x in (("ref_chosen_logps", ref_chosen_logps), ("ref_rejected_logps", ref_rejected_logps)):
        if x is None:
            raise fail(name, "reference scores (MNPO's anchor includes the reference)", "None")
        _scores(name, x, n)
    logps, coefs = [ref_chosen_logps], [rho]
    logps_r = [ref_rejected_logps]
    if rho != 1:
        for name, o in (("opponent_chosen_logps", opponent_chosen_logps),
                        ("opponent_rejected_logps", opponent_rejected_logps)):
            if not isinstance(o, torch.Tensor) or o.dim() != 2 or o.shape[0] != n:
                raise fail(name, f"a (B={n}, J) tensor of opponents' scores when rho != 1", describe(o))
            check_floating(name, o)
        j = opponent_chosen_logps.shape[1]
        if opponent_rejected_logps.shape[1] != j:
            raise fail("opponent_rejected_logps", f"{j} opponents", describe(opponent_rejected_logps))
        lam = (torch.full((j,), 1.0 / j, dtype=pc.dtype) if weights is None
               else torch.as_tensor(weights, dtype=pc.dtype))
        for k in range(j):
            logps.append(opponent_chosen_logps[:, k])
            logps_r.append(opponent_rejected_logps[:, k])
            coefs.append((1 - rho) * lam[k])
    anchor_w = geometric_anchor(logps, coefs)
    anchor_l = geometric_anchor(logps_r, coefs)
    u_w, u_l = pair_rewards(pc, policy_rejected_logps, anchor_w, anchor_l)
    loss = margin_loss(u_w - u_l, "squared", target=1 / (2 * beta))
    return _finish(loss, reduction, sample_weight, return_metrics, beta * u_w, beta * u_l)


# ----------------------------------------------------------------------------------------------- APO
APO_PAPER = Paper("Accelerated Preference Optimization for Large Language Model Alignment", 2024, "2410.06293",
                  "He, Chen, Zhang, Gu")


@_reg("apo", APO_PAPER, "DPO with l_ref = (1 + alpha) l_{t} - alpha l_{t-1}",
      extras={"prev_chosen_logps": lambda g, n: -(0.5 + 5 * torch.rand(n, generator=g, dtype=torch.float64)),
              "prev_rejected_logps": lambda g, n: -(0.5 + 5 * torch.rand(n, generator=g, dtype=torch.float64))})
def apo(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, prev_chosen_logps,
        prev_rejected_logps, *, beta: float = 0.1, alpha: float = 0.3, sample_weight=None, reduction: str = "mean",
        return_metrics: bool = False):
    """Accelerated Preference Optimization: iterative DPO against a Nesterov-extrapolated reference.

    .. math:: L = -\\log\\sigma(\\beta m),\\quad \\ell_{anchor} = (1+\\alpha)\\,\\ell_t - \\alpha\\,\\ell_{t-1}

    ``ref_*``: the latest iterate pi_t; ``prev_*``: the one before, pi_{t-1}. ``alpha = 0`` is iterative DPO
    (pi_t as the reference). Not :func:`apo_zero` (Anchored PO). Paper: He et al., "Accelerated Preference
    Optimization for Large Language Model Alignment", 2024, arXiv:2410.06293.
    """
    n = _scores("policy_chosen_logps", policy_chosen_logps).shape[0]
    for name, x in (("ref_chosen_logps", ref_chosen_logps), ("ref_rejected_logps", ref_rejected_logps),
                    ("prev_chosen_logps", prev_chosen_logps), ("prev_rejected_logps", prev_rejected_logps)):
        _scores(name, x, n)
    a_w = geometric_anchor([ref_chosen_logps, prev_chosen_logps], [1 + alpha, -alpha])
    a_l = geometric_anchor([ref_rejected_logps, prev_rejected_logps], [1 + alpha, -alpha])
    u_w, u_l = pair_rewards(policy_chosen_logps, policy_rejected_logps, a_w, a_l)
    return _finish(margin_loss(beta * (u_w - u_l)), reduction, sample_weight, return_metrics, beta * u_w,
                   beta * u_l)


# ---------------------------------------------------------------------------------------------- MAPL
MAPL_PAPER = Paper("Multi-level Aware Preference Learning: Enhancing RLHF for Complex Multi-Instruction Tasks",
                   2025, "2505.12845", "MAPL authors")


@_reg("mapl", MAPL_PAPER, "L = -log sigma(beta [u(y | x_w) - u(y | x_l)])")
def mapl(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps=None, ref_rejected_logps=None, *,
         beta: float = 0.1, sample_weight=None, reduction: str = "mean", return_metrics: bool = False):
    """MAPL's prompt-contrastive (inter-prompt) loss: one response scored under two prompts.

    .. math:: L = -\\log\\sigma\\big(\\beta[u(y\\mid x_w) - u(y\\mid x_l)]\\big)

    "chosen" scores are the response under the prompt it satisfies (x_w), "rejected" the same response under
    a perturbed prompt it does not (x_l). Combine with a response-contrastive head (:func:`dpo`) for the
    paper's multi-level objective. Paper: "Multi-level Aware Preference Learning: Enhancing RLHF for Complex
    Multi-Instruction Tasks", 2025, arXiv:2505.12845 (formula from the catalogue; not verified).
    """
    u_w, u_l = pair_rewards(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    return _finish(margin_loss(beta * (u_w - u_l)), reduction, sample_weight, return_metrics, beta * u_w,
                   beta * u_l)


# --------------------------------------------------------------------------------------------- DisCO
DISCO_PAPER = Paper("DisCO: Reinforcing Large Reasoning Models with Discriminative Constrained Optimization",
                    2025, "2505.12366", "Li, Lin, Li, Yang")


def _disco(logps, labels, kl, *, tau, beta, delta, balanced, reduction, sample_weight):
    s = logps
    check_floating("logps", s)
    if s.dim() != 2:
        raise fail("logps", "a (G, n) tensor: n answer scores per question", describe(s))
    if not isinstance(labels, torch.Tensor) or labels.dtype != torch.bool:
        raise fail("labels", "a boolean (G, n) tensor of correct answers", describe(labels))
    if labels.shape != s.shape:
        raise fail("labels", f"shape {tuple(s.shape)}", f"shape {tuple(labels.shape)}")
    pos, neg = labels, ~labels
    n_pos, n_neg = pos.sum(-1), neg.sum(-1)
    valid = (n_pos > 0) & (n_neg > 0)
    zero = s.new_zeros(())
    mean_pos = torch.where(pos, s, zero).sum(-1) / n_pos.clamp_min(1)
    if balanced:
        neg_term = torch.where(neg, s, zero).sum(-1) / n_neg.clamp_min(1)
    else:
        neg_inf = s.new_full((), float("-inf"))
        lse = torch.logsumexp(torch.where(neg, s / tau, neg_inf), -1)
        neg_term = tau * (torch.where(valid, lse, zero) - torch.log(n_neg.clamp_min(1).to(s.dtype)))
    loss = -(mean_pos - neg_term)
    if kl is not None:
        check_floating("kl", kl)
        if kl.dim() > 1 or (kl.dim() == 1 and kl.shape[0] != s.shape[0]):
            raise fail("kl", f"a scalar or ({s.shape[0]},) KL estimate", describe(kl))
        loss = loss + (beta * torch.relu(kl - delta)).detach() * kl
    loss = torch.where(valid, loss, zero)
    return reduce(loss, reduction, weight=check_sample_weight(sample_weight, loss.shape),
                  mask=valid)


@objective("disco", family=FAMILY, input_kind=GROUP_SCORES, example=group_example, paper=DISCO_PAPER,
           formula="L = -(mean_{O+} s - tau log mean_{O-} e^{s/tau}) + sg(beta [KL - delta]_+) KL")
def disco(logps, labels, kl=None, *, tau: float = 10.0, beta: float = 1e3, delta: float = 1e-4,
          sample_weight=None, reduction: str = "mean"):
    """DisCO: a discriminative objective per question, positives' mean score against a soft max of negatives.

    .. math:: L = -\\Big(\\mathrm{mean}_{O^+} s - \\tau\\log\\mathrm{mean}_{O^-} e^{s/\\tau}\\Big)
              + \\mathrm{sg}(\\beta[\\widehat{KL} - \\delta]_+)\\,\\widehat{KL}

    ``logps``: ``(G, n)`` scores of n answers to G questions, the length-normalised log-likelihood
    (``tau = 10``) or the mean token ratio (``tau = 1``); ``labels``: correctness. ``kl``: the KL estimate to
    the old policy, per question or a scalar; the constraint term's gradient is ``beta [KL - delta]_+ grad KL``
    (the squared-hinge penalty). Questions whose answers are all correct or all wrong carry no contrast: their
    loss is 0 and they are left out of the mean. :func:`disco_b` is the balanced (mean) form. Paper: Li et
    al., "DisCO: Reinforcing Large Reasoning Models with Discriminative Constrained Optimization", 2025,
    arXiv:2505.12366.
    """
    return _disco(logps, labels, kl, tau=tau, beta=beta, delta=delta, balanced=False, reduction=reduction,
                  sample_weight=sample_weight)


@objective("disco_b", family=FAMILY, input_kind=GROUP_SCORES, example=group_example, paper=DISCO_PAPER,
           formula="L = -(mean_{O+} s - mean_{O-} s) + sg(beta [KL - delta]_+) KL")
def disco_b(logps, labels, kl=None, *, beta: float = 1e3, delta: float = 1e-4, sample_weight=None,
            reduction: str = "mean"):
    """DisCO-b: DisCO with the balanced (plain mean) negative term.

    .. math:: L = -(\\mathrm{mean}_{O^+} s - \\mathrm{mean}_{O^-} s)
              + \\mathrm{sg}(\\beta[\\widehat{KL} - \\delta]_+)\\,\\widehat{KL}

    See :func:`disco`. Paper: Li et al., "DisCO: Reinforcing Large Reasoning Models with Discriminative
    Constrained Optimization", 2025, arXiv:2505.12366.
    """
    return _disco(logps, labels, kl, tau=1.0, beta=beta, delta=delta, balanced=True, reduction=reduction,
                  sample_weight=sample_weight)
