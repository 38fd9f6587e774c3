"""The ``preference`` task: a K-armed bandit policy trained on pairwise preferences with a known ground
truth (Bradley-Terry or a cyclic, non-transitive preference).

``policy=tiny-llama`` (``losskit arena preference --policy tiny-llama``, needs ``pip install 'losskit[hf]'``)
replaces the bandit's logits by a real autoregressive model: the K responses are K fixed token sequences after
one fixed prompt, their scores are a tiny Llama's sequence log-probabilities (sums over the response tokens,
true log-probabilities, not normalised over the K), the reference is the initial model, and the metrics are
computed on the model's distribution restricted to the K responses (the DPO optimum and the Nash equilibria
are statements about that conditional distribution)."""

from __future__ import annotations

import numpy as np
import torch

from ..._core.domains import Choice
from .. import _train as T
from ..claims import better_than_baseline
from ..task import Candidate, Task, TrialResult, bind_call
from ._common import entry_of, kwonly

__all__ = ["Preference"]


def _nash(P: np.ndarray) -> np.ndarray:
    """The (maximin) Nash equilibrium of the symmetric zero-sum game with payoff ``P - 1/2`` (SciPy LP)."""
    from scipy.optimize import linprog

    k = len(P)
    A = P - 0.5
    # max v s.t. (A^T pi)_j >= v for all j, sum pi = 1, pi >= 0  ->  min -v
    c = np.r_[np.zeros(k), -1.0]
    a_ub = np.c_[-A.T, np.ones(k)]
    res = linprog(c, A_ub=a_ub, b_ub=np.zeros(k), A_eq=np.r_[np.ones(k), 0.0][None], b_eq=[1.0],
                  bounds=[(0, None)] * k + [(None, None)], method="highs")
    pi = np.clip(res.x[:k], 0, None)
    return pi / pi.sum()


def _regularised_nash(P: np.ndarray, ref: np.ndarray, beta: float, iters: int = 20_000,
                      tol: float = 1e-12) -> np.ndarray:
    """The symmetric equilibrium of the KL-regularised preference game
    ``max_pi min_pi' pi^T P pi' - beta KL(pi || ref) + beta KL(pi' || ref)``: the fixed point
    ``pi = ref exp(P pi / beta) / Z``, found by damped multiplicative (mirror-descent) iteration.
    Online IPO / EGPO / Nash-MP target it (Munos et al. 2023, arXiv:2312.00886)."""
    log_ref = np.log(ref)
    pi = ref.copy()
    eta = min(1.0, beta)  # damping: the map is (1/beta)-Lipschitz in the log domain
    for _ in range(iters):
        logits = log_ref + (P @ pi) / beta
        target = np.exp(logits - logits.max())
        target /= target.sum()
        new = np.exp((1 - eta) * np.log(pi) + eta * np.log(target))
        new /= new.sum()
        if np.abs(new - pi).sum() < tol:
            return new
        pi = new
    return pi


def _nash_claim(boards):
    return better_than_baseline(
        boards, task="preference", where={}, contenders=("egpo", "nash_mp"), reference="dpo", metric="dist_to_nash",
        statement="Nash-learning objectives (EGPO, Nash-MP) end closer to the beta-regularised Nash equilibrium "
                  "of the preference game than DPO",
        source="Zhou et al. 2025, EGPO (arXiv:2503.08942); Tiapkin et al. 2025, Nash-MP (arXiv:2505.19731); "
               "Munos et al. 2023, Nash learning from human feedback (arXiv:2312.00886)")


class Preference(Task):
    """A K-armed bandit policy trained on pairwise preferences with a known ground truth."""

    name = "preference"
    description = ("bandit policy over `vocab` responses, reference policy fixed; preference pairs drawn from "
                   "the reference and labelled by a known Bradley-Terry model (`truth=bt`) or a non-transitive "
                   "cyclic preference (`truth=cyclic`); metrics: win rate vs the reference, KL(policy||ref), "
                   "total-variation distance to the known optimum (BT: pi_ref exp(r/beta) normalised; "
                   "cyclic: the game's Nash equilibrium), and to the beta-regularised Nash equilibrium "
                   "of the preference game (pi = pi_ref exp(P pi / beta) / Z, what online IPO, EGPO and "
                   "Nash-MP target). Every head gets the task's beta. KTO (z0 from the batch) sees chosen as "
                   "desirable and rejected as undesirable; EGPO's opponent is the current policy (exact "
                   "expectations, plain gradient steps); Nash-MP samples from the policy, previous iterate "
                   "refreshed every epoch. `policy=tiny-llama`: the K responses are token sequences scored by a "
                   "tiny Llama (`response_length` tokens, Adam at `llama_lr`), metrics on its distribution "
                   "restricted to the K")
    metrics = ("win_rate", "kl_to_ref", "dist_to_opt", "dist_to_nash")
    lower_is_better = frozenset({"kl_to_ref", "dist_to_opt", "dist_to_nash"})
    baseline = "dpo"
    claims = (_nash_claim,)
    defaults = {"truth": "bt", "vocab": 16, "pairs": 2048, "epochs": 30, "lr": 0.05, "batch_size": 256,
                "beta": 0.5, "eval_every": 3, "policy": "bandit", "llama_lr": 0.003, "response_length": 4}
    quick_config = {"epochs": 20, "eval_every": 2}
    quick_sweep = {"truth": ["bt", "cyclic"]}
    settings = {"truth": Choice("bt", "cyclic")}
    quick = ("dpo", "ipo", "simpo", "kto", "orpo", "cpl", "egpo", "nash_mp")

    #: settings of ``policy=tiny-llama`` only: dropped from the bandit's configuration, so that bandit runs keep
    #: the configuration (and the stored results) they had before the option existed
    LLAMA_ONLY = ("policy", "llama_lr", "response_length")

    def config(self, overrides=None, quick=False):
        cfg = super().config(overrides, quick)
        if cfg["policy"] == "bandit":
            cfg = {k: v for k, v in cfg.items() if k not in self.LLAMA_ONLY}
        return cfg

    def candidates(self):
        return [Candidate(n) for n in ("dpo", "ipo", "simpo", "kto", "orpo", "d2o", "ddo", "cpl", "egpo",
                                        "nash_mp")]

    def world(self, seed, config, ref_logits=None):
        """The ground truth and the preference pairs; ``ref_logits``: the reference's (unnormalised) log-probs
        of the K responses (default: random, the bandit's)."""
        k = config["vocab"]
        g = torch.Generator().manual_seed(50_000 + seed)
        drawn = 0.5 * torch.randn(k, generator=g, dtype=torch.float64)
        ref_logits = drawn if ref_logits is None else ref_logits.double()
        if config["truth"] == "bt":
            r = torch.randn(k, generator=g, dtype=torch.float64)
            P = torch.sigmoid(r[:, None] - r[None, :])
        elif config["truth"] == "cyclic":
            r = None
            P = torch.full((k, k), 0.5, dtype=torch.float64)
            for i in range(k):
                for s in range(1, (k - 1) // 2 + 1):  # i beats the next half of the circle
                    j = (i + s) % k
                    strength = 0.5 + 0.4 * (1.0 - (s - 1) / max((k - 1) // 2, 1))
                    P[i, j], P[j, i] = strength, 1 - strength
        else:
            raise ValueError(f"truth: expected 'bt' or 'cyclic', got {config['truth']!r}")
        ref = torch.softmax(ref_logits, 0)
        n = config["pairs"]
        a = torch.multinomial(ref, n, replacement=True, generator=g)
        b = torch.multinomial(ref, n, replacement=True, generator=g)
        a_wins = torch.rand(n, generator=g, dtype=torch.float64) < P[a, b]
        chosen, rejected = torch.where(a_wins, a, b), torch.where(a_wins, b, a)
        return ref_logits, r, P, chosen, rejected

    def run(self, candidate, seed, config):
        entry = entry_of(candidate)
        policy = config.get("policy", "bandit")
        if policy == "tiny-llama":
            model, scores, length = _llama_policy(seed, config)
            with torch.no_grad():
                ref_scores = scores().detach()
            ref_logits, r, P, chosen, rejected = self.world(seed, config, ref_logits=ref_scores)
            lr = config["llama_lr"]
        elif policy == "bandit":
            ref_logits, r, P, chosen, rejected = self.world(seed, config)
            theta = torch.nn.Parameter(ref_logits.clone().float())

            class _Policy(torch.nn.Module):
                def __init__(self):
                    super().__init__()
                    self.theta = theta

            model, length, lr = _Policy(), 1, config["lr"]
            ref_scores = torch.log_softmax(ref_logits.float(), 0).detach()

            def scores():
                return torch.log_softmax(model.theta, 0)
        else:
            raise ValueError(f"policy: expected 'bandit' or 'tiny-llama', got {policy!r}")
        opts = dict(candidate.options)
        beta = float(opts.get("beta", config["beta"]))
        if "beta" in kwonly(entry.fn):
            opts.setdefault("beta", beta)
        ref_lp = ref_scores.float()
        if r is not None:
            opt_pi = torch.softmax(ref_logits + r / beta, 0)
        else:
            opt_pi = torch.tensor(_nash(P.numpy()))
        ref_pi = torch.softmax(ref_logits, 0)
        reg_nash = torch.tensor(_regularised_nash(P.numpy(), ref_pi.numpy(), beta))

        def measures():
            with torch.no_grad():  # the bandit: its logits in float64, as before the tiny-llama option
                pi = torch.softmax((model.theta if policy == "bandit" else scores()).detach().double(), 0)
            win = float(pi @ P @ ref_pi)
            kl = float((pi * (pi.log() - ref_pi.log())).sum())
            tv = float(0.5 * (pi - opt_pi).abs().sum())
            tv_nash = float(0.5 * (pi - reg_nash).abs().sum())
            return {"win_rate": win, "kl_to_ref": kl, "dist_to_opt": tv, "dist_to_nash": tv_nash}

        Pf = P.float()
        gen = torch.Generator().manual_seed(80_000 + seed)
        steps_per_epoch = -(-len(chosen) // config["batch_size"])
        prev = {"lp": ref_lp.clone()}  # Nash-MP's previous iterate, refreshed every epoch
        # reference-free heads (SimPO, ORPO, CPL, ...) take no reference scores: their own example says so
        try:
            uses_ref = "ref_chosen_logps" in entry.make_example().inputs
        except Exception:  # noqa: BLE001  (no example generator: assume the conventional signature)
            uses_ref = True

        def loss(idx, step):
            lp = scores()
            c, rj = chosen[idx], rejected[idx]
            ones = torch.full((len(idx),), float(length))
            pi_now = lp.detach().exp() if policy == "bandit" else torch.softmax(lp.detach(), 0)
            inputs = {"policy_chosen_logps": lp[c], "policy_rejected_logps": lp[rj],
                      **({"ref_chosen_logps": ref_lp[c], "ref_rejected_logps": ref_lp[rj]} if uses_ref else {}),
                      "chosen_lengths": ones, "rejected_lengths": ones, "lengths": ones,
                      # EGPO: P(y > y'') against the current policy as opponent (exact expectation)
                      "chosen_preference": (Pf @ pi_now)[c], "rejected_preference": (Pf @ pi_now)[rj]}
            if entry.input_kind.name == "unpaired scores":  # KTO: chosen are desirable, rejected not
                pol, ref = torch.cat([lp[c], lp[rj]]), torch.cat([ref_lp[c], ref_lp[rj]])
                # z0 estimated from the batch as KTO does (a bandit has no prompts to mismatch: the batch's completions)
                inputs.update(policy_logps=pol, ref_logps=ref, policy_kl_logps=pol, ref_kl_logps=ref,
                              desirable=torch.cat([torch.ones(len(idx), dtype=torch.bool),
                                                   torch.zeros(len(idx), dtype=torch.bool)]))
            elif entry.input_kind.name == "on-policy samples":  # Nash-MP: samples from the policy itself
                if step % steps_per_epoch == 0:
                    prev["lp"] = lp.detach().clone()
                ys = torch.multinomial(pi_now, len(idx), replacement=True, generator=gen)
                inputs.update(policy_logps=lp[ys], ref_logps=ref_lp[ys], prev_logps=prev["lp"][ys],
                              preference=(Pf @ pi_now)[ys])
            return bind_call(entry.fn, inputs, opts, aliases=_PREF_ALIASES)

        curve = T.train(model, loss, len(chosen), epochs=config["epochs"], lr=lr,
                        batch_size=config["batch_size"], seed=seed, eval_every=config["eval_every"],
                        evaluate=lambda: measures()["win_rate"])
        return TrialResult(measures(), curve, "win rate vs reference")


def _llama_policy(seed, config):
    """A tiny Llama and ``scores()``: its sequence log-probs of the K responses after one prompt, ``(K,)``."""
    from ...integrations.transformers import tiny_llama

    k, length = config["vocab"], config["response_length"]
    vocab = 64
    model = tiny_llama(seed=70_000 + seed, vocab_size=vocab)
    g = torch.Generator().manual_seed(60_000 + seed)
    responses = torch.randint(0, vocab, (4 * k, length), generator=g).unique(dim=0)
    responses = responses[torch.randperm(len(responses), generator=g)[:k]]
    prompt = torch.randint(0, vocab, (1, 2), generator=g).expand(k, 2)
    ids = torch.cat([prompt, responses], 1)

    def scores():
        logits = model(input_ids=ids).logits[:, prompt.shape[1] - 1:-1].float()
        return torch.log_softmax(logits, -1).gather(-1, responses[..., None]).squeeze(-1).sum(-1)

    return model, scores, length


_PREF_ALIASES = {
    "chosen_logps": ["policy_chosen_logps"], "rejected_logps": ["policy_rejected_logps"],
    "reference_chosen_logps": ["ref_chosen_logps"], "reference_rejected_logps": ["ref_rejected_logps"],
}
