"""Contrastive Partial Ranking Distillation (Chen et al., CVPR 2024, arXiv:2407.07479): no reference code.

The paper publishes no code and its equations were not reachable here, so there is nothing to port; the
tests of ``cprd_loss`` are in tests/test_distillation_cprd.py (a float64 reference written with Python loops,
limiting cases, invariances, the ordering property). This file records why (``ORACLES``) and checks the
one fact the reading rests on: the ranking term is the negative log of a normalised Plackett-Luce
probability of the teacher's order, so over all K! orders of the hard negatives its exponentials sum to 1.
"""

import itertools

import torch
from oracle_meta import NoReference

import losskit

ORACLES = [
    NoReference("cprd_loss",
                reason="no code of the authors (Chen, Ma, Zhang, ..., Hu): the code index (find_repos CPRD, "
                       "find_string 'Partial Ranking Distillation' / 'Cross Encoder a Good Teacher', code search "
                       "by title and authors) holds only citations, and the pages corpus (arXiv html, CVF open "
                       "access, HF papers) only the abstract; the loss is our reading of the abstract (InfoNCE + "
                       "alpha x Plackett-Luce likelihood of the teacher's order of its top-K hard negatives, "
                       "suffix denominators within those K), stated in the docstring",
                checked_against="tests/test_distillation_cprd.py: a float64 reference with Python loops "
                                "(1e-12), alpha = 0 and k = 1 are cross-entropy on the rows, k = 2 adds "
                                "-alpha log sigmoid((s_c1 - s_c2)/T), row-shift and teacher-monotone "
                                "invariance, the ranking term smallest exactly at the teacher's order; here: "
                                "exp(-ranking term) sums to 1 over the K! orders"),
]


def test_ranking_term_is_a_normalised_plackett_luce_likelihood():
    g = torch.Generator().manual_seed(0)
    m, k = 6, 4
    s = torch.randn(1, m, generator=g, dtype=torch.float64)
    y = torch.tensor([0])
    total = 0.0
    for perm in itertools.permutations(range(1, k + 1)):  # every teacher order of the 4 hard negatives
        t = torch.zeros(1, m, dtype=torch.float64)
        t[0, 0] = 100.0  # the positive's teacher score plays no part
        for rank, c in enumerate(perm):
            t[0, c] = 10.0 - rank  # columns 1..4 above column 5, in the order perm
        term = (losskit.cprd_loss(s, t, y, k=k, temperature=0.5)
                - losskit.cprd_loss(s, t, y, k=k, temperature=0.5, alpha=0.0))
        total += torch.exp(-term).item()
    assert abs(total - 1.0) < 1e-12
