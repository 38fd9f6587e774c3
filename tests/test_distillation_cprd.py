"""cprd_loss (Contrastive Partial Ranking Distillation, arXiv:2407.07479) against a float64 reference written
with plain Python loops, its limiting cases (alpha = 0 and k = 1 are InfoNCE, k = 2 a logistic pair term),
its invariances, and the property it exists for: the ranking term is smallest when the student orders the
hard negatives as the teacher does.

No code of the authors exists (tests/oracles/test_cprd.py says where we looked); the formula is our reading
of the abstract, stated in the docstring.
"""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import losskit
from losskit import LossInputError


def _inputs(n=5, m=7, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    s = scale * torch.randn(n, m, generator=g, dtype=torch.float64)
    t = torch.randn(n, m, generator=g, dtype=torch.float64)
    y = torch.randint(0, m, (n,), generator=g)
    return s, t, y


# ------------------------------------------------------------------------------ the Python reference
def _hard_negatives(t_row, p, k):
    """The teacher's top-k negatives in its order: column indices sorted by (-score, index), positive left out."""
    negs = [j for j in range(len(t_row)) if j != p]
    negs.sort(key=lambda j: (-t_row[j], j))
    return negs[:k]


def _log_sum_exp(xs):
    m = max(xs)
    return m + math.log(sum(math.exp(x - m) for x in xs))


def _pl_log_prob(w, order):
    """log of the Plackett-Luce probability of ``order`` (a list of keys of ``w``): pick the first among
    all, the second among the rest, ..."""
    total = 0.0
    for j in range(len(order)):
        total += w[order[j]] - _log_sum_exp([w[c] for c in order[j:]])
    return total


def _ref_row(s_row, t_row, p, T, alpha, k):
    z = [v / T for v in s_row]
    nce = _log_sum_exp(z) - z[p]
    hard = _hard_negatives(t_row, p, min(k, len(s_row) - 1))
    rank = -_pl_log_prob({c: z[c] for c in hard}, hard)
    return nce + alpha * rank


def _ref(s, t, y, T=0.07, alpha=1.0, k=8):
    return torch.tensor([_ref_row(s[i].tolist(), t[i].tolist(), int(y[i]), T, alpha, k) for i in range(len(s))],
                        dtype=torch.float64)


def test_reference_is_a_normalised_plackett_luce_likelihood():
    # the reference's ranking term is -log P(order): summed over all K! orders the probabilities give 1
    w = {0: 0.3, 1: -1.2, 2: 2.0, 3: 0.7}
    total = sum(math.exp(_pl_log_prob(w, list(perm))) for perm in itertools.permutations(w))
    assert abs(total - 1.0) < 1e-14


# -------------------------------------------------------------------------------------- the values
@pytest.mark.parametrize(("T", "alpha", "k"), [(0.07, 1.0, 8), (0.07, 1.0, 3), (0.5, 0.3, 4), (1.0, 2.0, 6),
                                              (0.2, 1.0, 2)])
def test_matches_the_loop_reference(T, alpha, k):
    s, t, y = _inputs()
    ours = losskit.cprd_loss(s, t, y, temperature=T, alpha=alpha, k=k, reduction="none")
    torch.testing.assert_close(ours, _ref(s, t, y, T, alpha, k), rtol=1e-12, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 5), m=st.integers(2, 9), k=st.integers(1, 10), seed=st.integers(0, 10_000),
       T=st.sampled_from([0.05, 0.07, 0.3, 1.0]), alpha=st.sampled_from([0.0, 0.5, 1.0, 3.0]))
def test_matches_the_loop_reference_on_random_shapes(n, m, k, seed, T, alpha):
    s, t, y = _inputs(n, m, seed)
    ours = losskit.cprd_loss(s, t, y, temperature=T, alpha=alpha, k=k, reduction="none")
    torch.testing.assert_close(ours, _ref(s, t, y, T, alpha, k), rtol=1e-11, atol=1e-11)


def test_reductions_weights_and_module():
    s, t, y = _inputs()
    none = losskit.cprd_loss(s, t, y, reduction="none")
    torch.testing.assert_close(losskit.cprd_loss(s, t, y), none.mean(), rtol=1e-14, atol=0)
    torch.testing.assert_close(losskit.cprd_loss(s, t, y, reduction="sum"), none.sum(), rtol=1e-14, atol=0)
    w = torch.tensor([0.0, 1.0, 2.0, 0.5, 1.5], dtype=torch.float64)
    torch.testing.assert_close(losskit.cprd_loss(s, t, y, sample_weight=w), (w * none).sum() / w.sum(),
                               rtol=1e-14, atol=0)
    module = losskit.CPRDLoss(temperature=0.1, alpha=0.5, k=3)
    assert torch.equal(module(s, t, y), losskit.cprd_loss(s, t, y, temperature=0.1, alpha=0.5, k=3))


def test_default_target_is_the_diagonal():
    s, t, _ = _inputs(n=5, m=7)
    torch.testing.assert_close(losskit.cprd_loss(s, t), losskit.cprd_loss(s, t, torch.arange(5)), rtol=0, atol=0)
    torch.testing.assert_close(losskit.cprd_loss(s, t, reduction="none"), _ref(s, t, torch.arange(5)),
                               rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------ limiting cases
@pytest.mark.parametrize("T", [0.07, 1.0])
def test_alpha_zero_is_infonce_cross_entropy(T):
    s, t, y = _inputs()
    ours = losskit.cprd_loss(s, t, y, temperature=T, alpha=0.0, reduction="none")
    torch.testing.assert_close(ours, F.cross_entropy(s / T, y, reduction="none"), rtol=1e-13, atol=1e-13)


def test_k_one_is_infonce_for_any_alpha():
    # the last Plackett-Luce factor is 1: ranking a single negative says nothing
    s, t, y = _inputs()
    ce = F.cross_entropy(s / 0.07, y, reduction="none")
    for alpha in (0.5, 1.0, 10.0):
        torch.testing.assert_close(losskit.cprd_loss(s, t, y, alpha=alpha, k=1, reduction="none"), ce,
                                   rtol=1e-13, atol=1e-13)


def test_k_two_adds_a_logistic_pair_term():
    s, t, y = _inputs()
    T, alpha = 0.2, 0.7
    extra = []
    for i in range(len(s)):
        c1, c2 = _hard_negatives(t[i].tolist(), int(y[i]), 2)
        extra.append(-F.logsigmoid((s[i, c1] - s[i, c2]) / T))
    want = F.cross_entropy(s / T, y, reduction="none") + alpha * torch.stack(extra)
    torch.testing.assert_close(losskit.cprd_loss(s, t, y, temperature=T, alpha=alpha, k=2, reduction="none"), want,
                               rtol=1e-13, atol=1e-13)


def test_k_beyond_the_negatives_ranks_all_of_them():
    s, t, y = _inputs(m=5)
    torch.testing.assert_close(losskit.cprd_loss(s, t, y, k=100), losskit.cprd_loss(s, t, y, k=4), rtol=0, atol=0)


# --------------------------------------------------------------------------------- invariances
def test_row_shift_of_the_student_leaves_the_loss_unchanged():
    s, t, y = _inputs()
    c = torch.tensor([3.0, -2.0, 50.0, 0.0, -7.5], dtype=torch.float64).unsqueeze(1)
    torch.testing.assert_close(losskit.cprd_loss(s + c, t, y, reduction="none"),
                               losskit.cprd_loss(s, t, y, reduction="none"), rtol=1e-11, atol=1e-11)


def test_teacher_enters_only_through_its_order():
    s, t, y = _inputs()
    base = losskit.cprd_loss(s, t, y, reduction="none")
    for monotone in (lambda x: 3 * x - 1, torch.exp, lambda x: x.pow(3) + 10):
        assert torch.equal(losskit.cprd_loss(s, monotone(t), y, reduction="none"), base)
    # the positive's own teacher score plays no part
    t2 = t.clone()
    t2[torch.arange(len(y)), y] = 1e6
    assert torch.equal(losskit.cprd_loss(s, t2, y, reduction="none"), base)
    # and the teacher gets no gradient
    tg = t.clone().requires_grad_(True)
    sg = s.clone().requires_grad_(True)
    losskit.cprd_loss(sg, tg, y).backward()
    assert tg.grad is None and torch.isfinite(sg.grad).all()


def test_teacher_ties_are_broken_by_column_index():
    s = torch.tensor([[0.0, 0.4, -0.3, 0.2]], dtype=torch.float64)
    t = torch.tensor([[5.0, 1.0, 1.0, 1.0]], dtype=torch.float64)  # positive 0, three tied negatives
    y = torch.tensor([0])
    torch.testing.assert_close(losskit.cprd_loss(s, t, y, reduction="none"), _ref(s, t, y), rtol=1e-13, atol=0)


def test_columns_permuted_together_permute_nothing():
    s, t, y = _inputs()
    perm = torch.randperm(s.shape[1], generator=torch.Generator().manual_seed(3))
    inv = torch.argsort(perm)
    torch.testing.assert_close(losskit.cprd_loss(s[:, perm], t[:, perm], inv[y], reduction="none"),
                               losskit.cprd_loss(s, t, y, reduction="none"), rtol=1e-13, atol=1e-13)


# ------------------------------------------------------------------------------------ the property
@pytest.mark.parametrize("seed", range(4))
def test_ranking_term_is_smallest_when_the_student_follows_the_teacher(seed):
    # the K hard-negative similarities of one row, assigned to the K hard negatives in every possible way:
    # the ranking term (alpha * rank = loss(alpha=1) - loss(alpha=0)) is smallest exactly when the student
    # orders them as the teacher does
    g = torch.Generator().manual_seed(seed)
    m, k = 7, 4
    s = torch.randn(1, m, generator=g, dtype=torch.float64)
    t = torch.randn(1, m, generator=g, dtype=torch.float64)
    y = torch.tensor([0])
    hard = _hard_negatives(t[0].tolist(), 0, k)
    values = sorted((s[0, hard]).tolist(), reverse=True)
    terms = {}
    for perm in itertools.permutations(range(k)):
        s2 = s.clone()
        for pos, c in enumerate(hard):
            s2[0, c] = values[perm[pos]]
        rank = (losskit.cprd_loss(s2, t, y, k=k, temperature=0.5)
                - losskit.cprd_loss(s2, t, y, k=k, temperature=0.5, alpha=0.0)).item()
        terms[perm] = rank
        assert rank >= -1e-12
    best = min(terms, key=terms.get)
    assert best == tuple(range(k))  # c_1 gets the largest similarity, c_2 the next, ...
    assert all(v > terms[best] + 1e-9 for p, v in terms.items() if p != best)


def test_gradient_pushes_a_misordered_pair_apart():
    # teacher: c_1 = column 1 above c_2 = column 2; the student has them the other way round
    s = torch.tensor([[1.0, 0.1, 0.5, -1.0]], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([[9.0, 3.0, 2.0, 1.0]], dtype=torch.float64)
    rank = losskit.cprd_loss(s, t, k=3, temperature=0.3) - losskit.cprd_loss(s, t, k=3, temperature=0.3, alpha=0.0)
    rank.backward()
    assert s.grad[0, 1] < 0 < s.grad[0, 2]  # gradient descent raises s_{c_1} and lowers s_{c_2}
    assert s.grad[0, 0] == 0  # the positive is not in the ranking term


# ------------------------------------------------------------------------------- numerics, errors
def test_large_similarities_stay_finite_in_float32():
    s, t, y = _inputs(scale=1e3)
    s32 = s.float().requires_grad_(True)
    out = losskit.cprd_loss(s32, t.float(), y, reduction="none")
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert torch.isfinite(s32.grad).all()
    torch.testing.assert_close(out.double(), _ref(s.float().double(), t, y), rtol=1e-5, atol=1e-2)


def test_half_precision_is_computed_in_float32():
    s, t, y = _inputs()
    out = losskit.cprd_loss(s.half(), t.half(), y)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, losskit.cprd_loss(s.half().float(), t.half().float(), y), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"teacher_scores": torch.zeros(5, 6)}, "teacher_scores"),
    ({"teacher_scores": torch.zeros(4, 7)}, "teacher_scores"),
    ({"target": torch.tensor([0, 1, 2, 3, 7])}, "target"),
    ({"target": torch.tensor([0, 1, 2])}, "target"),
    ({"target": torch.zeros(5, 1, dtype=torch.long)}, "target"),
    ({"target": torch.zeros(5)}, "target"),
    ({"student_similarity": torch.zeros(5, 7, dtype=torch.long)}, "student_similarity"),
    ({"student_similarity": torch.zeros(5), "teacher_scores": torch.zeros(5)}, "student_similarity"),
    ({"student_similarity": torch.zeros(5, 1), "teacher_scores": torch.zeros(5, 1),
      "target": torch.zeros(5, dtype=torch.long)}, "student_similarity"),
    ({"student_similarity": torch.zeros(8, 7), "teacher_scores": torch.zeros(8, 7), "target": None}, "target"),
    ({"temperature": 0.0}, "temperature"),
    ({"alpha": -1.0}, "alpha"),
    ({"k": 0}, "k"),
    ({"k": 2.5}, "k"),
])
def test_bad_inputs_name_the_argument(kwargs, name):
    s, t, y = _inputs()
    args = {"student_similarity": s, "teacher_scores": t, "target": y, **kwargs}
    with pytest.raises(LossInputError, match=f"^{name}:"):
        losskit.cprd_loss(**args)


def test_nonfinite_similarity_is_refused():
    s, t, y = _inputs()
    s[1, 2] = float("nan")
    with pytest.raises(LossInputError, match="^student_similarity:"):
        losskit.cprd_loss(s, t, y)
