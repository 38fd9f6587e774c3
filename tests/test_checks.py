"""``losskit check`` gives the verdicts the theory gives, on losses written here independently.

The losses below are small float64 implementations from their textbook formulas (not losskit's), so
the checker is tested against theory, not against the library it checks.
"""

import json

import pytest
import torch

import losskit
from losskit.checks import PROPERTY_CHECKS, check, conditional_risk_minimiser, main
from losskit.checks._links import sparsemax, stablemax
from losskit.checks._probes import MulticlassProbe, per_sample


# ------------------------------------------------------------------- independent reference losses
def ce(logits, target, reduction="none"):
    return -torch.log_softmax(logits, -1).gather(1, target[:, None])[:, 0]


def mae(logits, target):
    """1 - p_y (Ghosh et al. 2017): symmetric, bounded, not convex."""
    return 1 - torch.softmax(logits, -1).gather(1, target[:, None])[:, 0]


def gce(logits, target, q=0.7):
    """(1 - p_y^q)/q (Zhang & Sabuncu 2018): bounded, calibrated, neither symmetric nor convex."""
    p = torch.softmax(logits, -1).gather(1, target[:, None])[:, 0]
    return (1 - p ** q) / q


def spherical_z_loss(logits, target, a=1.0, b=1.0):
    """de Brébisson & Vincent 2016: z~ = (z - mean z)/std z, L = softplus(a (b - z~_y))/a."""
    zt = (logits - logits.mean(-1, keepdim=True)) / logits.std(-1, keepdim=True)
    return torch.nn.functional.softplus(a * (b - zt.gather(1, target[:, None])[:, 0])) / a


def stablemax_ce(logits, target):
    """-log of the StableMax probability (Prieto et al. 2025), s(x) = x+1 (x>=0), 1/(1-x) (x<0)."""
    s = torch.where(logits >= 0, logits + 1, 1 / (1 - torch.clamp(logits, max=0)))
    return -(torch.log(s.gather(1, target[:, None])[:, 0]) - torch.log(s.sum(-1)))


def ce_sign_error(logits, target):
    """A user's cross-entropy with a sign error on the target logit: logsumexp(z) + z_y."""
    return torch.logsumexp(logits, -1) + logits.gather(1, target[:, None])[:, 0]


def ce_off_by_one(logits, target):
    """A user's cross-entropy that reads the wrong column (labels shifted by one)."""
    return ce(logits, (target + 1) % logits.shape[1])


def ce_scalar(logits, target):
    """Returns the batch mean only (no reduction argument): the checker calls it sample by sample."""
    return ce(logits, target).mean()


def logistic(x, y):
    return torch.nn.functional.softplus(-(2 * y - 1) * x)


def hinge(x, y):
    return torch.clamp(1 - (2 * y - 1) * x, min=0)


def sigmoid_loss(x, y):
    """sigma(-y x): the binary symmetric loss (L(x,1) + L(x,0) = 1)."""
    return torch.sigmoid(-(2 * y - 1) * x)


def hellinger(p, q):
    return (torch.softmax(p, -1).sqrt() - torch.softmax(q, -1).sqrt()).square().sum(-1)


def kl(p, q):
    lp, lq = torch.log_softmax(p, -1), torch.log_softmax(q, -1)
    return (lp.exp() * (lp - lq)).sum(-1)


def sq_logit_gap(p, q):
    """Not a divergence of distributions: it sees logits, so D(p, p + c) != 0."""
    return (p - q).square().sum(-1)


def _verdicts(report):
    return {v.name: v.status for v in report}


# ------------------------------------------------------------------------ theory's known cases
def test_cross_entropy_registered_is_calibrated_proper_convex_not_symmetric():
    r = check("cross_entropy")
    for p in ("calibrated", "proper", "convex", "nonnegative", "shift_invariant", "permutation_equivariant"):
        assert r[p].holds, r[p].evidence
    for p in ("symmetric", "bounded", "scale_invariant"):
        assert r[p].fails, r[p].evidence
    assert r.ok and r.seconds > 0


def test_independent_ce_matches_registered_verdicts():
    a, b = check(ce), check("cross_entropy")
    assert _verdicts(a) == _verdicts(b)


def test_mae_symmetric_bounded_not_convex():
    r = check(mae, ["symmetric", "bounded", "convex", "calibrated", "proper", "nonnegative"])
    assert r["symmetric"].holds and r["bounded"].holds and r["nonnegative"].holds
    assert r["convex"].fails
    assert r["calibrated"].holds          # the risk 1 - <p, softmax z> is minimised towards argmax p
    assert r["proper"].fails              # ... at a vertex, not at p
    assert r["symmetric"].numbers["max"] == pytest.approx(4 - 1, abs=1e-9)  # sum_k (1 - p_k) = K - 1


def test_gce_not_symmetric_bounded_calibrated_not_proper_not_convex():
    r = check(gce, options={"q": 0.7})
    assert r["symmetric"].fails and r["convex"].fails and r["proper"].fails
    assert r["bounded"].holds and r["calibrated"].holds
    assert r["bounded"].numbers["sup"][1e4] <= 1 / 0.7 + 1e-9


def test_spherical_z_loss_scale_and_shift_invariant():
    r = check(spherical_z_loss, ["scale_invariant", "shift_invariant", "bounded", "calibrated"])
    assert r["scale_invariant"].holds and r["shift_invariant"].holds, str(r)
    # |z~_k| <= (K-1)/sqrt(K) for the normalised logits, so the loss is bounded
    assert r["bounded"].holds
    assert r["bounded"].numbers["sup"][1e4] <= torch.nn.functional.softplus(torch.tensor(1 + 3 / 2)).item() + 1e-9
    assert check(ce, ["scale_invariant"])["scale_invariant"].fails


def test_stablemax_not_shift_invariant_but_proper_for_its_own_link():
    r = check(stablemax_ce, ["shift_invariant", "calibrated", "proper"], link="stablemax")
    assert r["shift_invariant"].fails and r["calibrated"].holds and r["proper"].holds, str(r)
    assert check(stablemax_ce, ["proper"])["proper"].fails  # not proper for the softmax link
    assert r["shift_invariant"].numbers["max_rel_change"] > 1e-3


def test_registered_focal_calibrated_not_proper_not_convex():
    r = check("focal")
    assert r["calibrated"].holds and r["proper"].fails and r["convex"].fails
    assert check("focal", ["proper", "convex"], options={"gamma": 0.0}).ok is True
    r0 = check("focal", ["proper", "convex"], options={"gamma": 0.0})
    assert r0["proper"].holds and r0["convex"].holds  # gamma = 0 is cross-entropy


# ---------------------------------------------------------------------- a user's mistakes are flagged
def test_sign_error_breaks_calibration_and_is_flagged():
    r = check(ce_sign_error, claims={"calibrated", "proper", "nonnegative"})
    assert r["calibrated"].fails and r["proper"].fails and r["nonnegative"].fails
    assert not r.ok and {v.name for v in r.failed_claims} == {"calibrated", "proper", "nonnegative"}
    assert "p=" in r["calibrated"].evidence  # shows a counterexample


def test_off_by_one_label_breaks_calibration():
    r = check(ce_off_by_one, ["calibrated", "convex", "symmetric"])
    assert r["calibrated"].fails and r["calibrated"].numbers["matched"] == 0
    assert r["convex"].holds  # still convex: only calibration reveals the mistake


def test_scalar_returning_loss_is_called_per_sample():
    a, b = check(ce_scalar, ["calibrated", "proper", "convex"]), check(ce, ["calibrated", "proper", "convex"])
    assert _verdicts(a) == _verdicts(b) == {"calibrated": "holds", "proper": "holds", "convex": "holds"}


def test_constant_loss_is_not_calibrated():
    r = check(lambda z, y: z.sum(-1) * 0 + 1.0, ["calibrated", "symmetric", "bounded", "convex"])
    assert r["calibrated"].fails and r["symmetric"].holds and r["bounded"].holds and r["convex"].holds


# ------------------------------------------------------------------------------- binary losses
def test_binary_logistic_hinge_sigmoid():
    r = check(logistic, kind="binary")
    assert r["calibrated"].holds and r["proper"].holds and r["convex"].holds and r["symmetric"].fails
    assert r["permutation_equivariant"].holds and r["bounded"].fails
    h = check(hinge, ["calibrated", "proper", "convex"], kind="binary")
    assert h["calibrated"].holds and h["convex"].holds and h["proper"].fails  # hinge: sign only
    s = check(sigmoid_loss, ["symmetric", "bounded", "convex"], kind="binary")
    assert s["symmetric"].holds and s["bounded"].holds and s["convex"].fails


def test_binary_focal_alpha_breaks_calibration_alpha_half_does_not():
    bad = check("binary_focal", ["calibrated"], options={"alpha": 0.25})
    assert bad["calibrated"].fails  # alpha = 0.25 moves the decision threshold away from eta = 1/2
    good = check("binary_focal", ["calibrated", "permutation_equivariant"], options={"alpha": 0.5})
    assert good["calibrated"].holds and good["permutation_equivariant"].holds
    assert check("binary_focal", ["calibrated"], options={"alpha": None})["calibrated"].holds


def test_conditional_risk_minimiser_of_ce_is_log_p():
    probe = MulticlassProbe(per_sample(ce, {}, True), k=3)
    P = torch.tensor([[0.2, 0.3, 0.5], [0.7, 0.2, 0.1]], dtype=torch.float64)
    z, r = conditional_risk_minimiser(probe, P, torch.Generator().manual_seed(0))
    torch.testing.assert_close(torch.softmax(z, -1), P, atol=1e-7, rtol=0)
    entropy = -(P * P.log()).sum(1)  # the Bayes risk of the log score is the entropy
    torch.testing.assert_close(r, entropy, atol=1e-10, rtol=0)


# ------------------------------------------------------------------------------- divergences
def test_divergence_axioms():
    h = check(hellinger, kind="distributions")
    assert h["divergence"].holds and h["symmetric_divergence"].holds and h["bounded"].holds
    assert h["bounded"].numbers["sup"][1e4] == pytest.approx(2.0, abs=1e-9)  # squared Hellinger <= 2
    k = check(kl, ["divergence", "symmetric_divergence", "bounded"], kind="distributions")
    assert k["divergence"].holds and k["symmetric_divergence"].fails and k["bounded"].fails
    g = check(sq_logit_gap, ["divergence", "symmetric_divergence"], kind="distributions")
    assert g["divergence"].fails and g["symmetric_divergence"].holds
    assert check("js_divergence").ok and check("kl_divergence").ok


def test_logits_regulariser_kind():
    r = check("logit_z_loss")
    assert r["nonnegative"].holds and r["convex"].holds and r["shift_invariant"].fails
    ent = check(lambda z: -(torch.softmax(z, -1) * torch.log_softmax(z, -1)).sum(-1), kind="logits")
    assert ent["shift_invariant"].holds and ent["bounded"].holds and ent["nonnegative"].holds


# ----------------------------------------------------------------------------- report and API
def test_finite_checks_and_margin_gradients():
    r = check("cross_entropy", ["finite_extreme", "finite_half"])
    assert r["finite_extreme"].holds and r["finite_half"].holds
    assert "wrong" in r["finite_extreme"].evidence
    naive = check(lambda z, y: -torch.log(torch.softmax(z, -1).gather(1, y[:, None])[:, 0]),
                  ["finite_extreme"])
    assert naive["finite_extreme"].fails  # log(softmax) underflows to log 0 at margin 1e4


def test_report_api_and_skips():
    r = check("binary_focal", ["shift_invariant", "divergence"])
    assert [v.status for v in r] == ["skipped", "skipped"]
    assert "binary" in r["shift_invariant"].evidence
    d = r.as_dict()
    assert json.dumps(d) and d["loss"] == "binary_focal"
    assert "calibrated" in str(check("cross_entropy", ["calibrated"]))
    with pytest.raises(ValueError, match="unknown property"):
        check(ce, ["calibratd"])
    with pytest.raises(KeyError, match="did you mean"):
        check("cross_entropyy")
    with pytest.raises(ValueError, match="unknown kind"):
        check(ce, kind="images")
    assert losskit.check(losskit.cross_entropy, ["proper"])["proper"].holds  # a registered function
    assert set(PROPERTY_CHECKS) <= set(losskit.PROPERTIES)


def test_layout_api_cli_and_deprecated_alias():
    """The API lives in losskit.checks.api, the command line in losskit.checks.cli; both re-exported."""
    import losskit.checks as checks
    from losskit.checks import api, cli
    from losskit.testing import conformance

    assert checks.check is api.check is losskit.checks.check
    assert checks.main is cli.main
    assert checks.PROPERTY_CHECKS is not conformance.CHECKS
    with pytest.warns(DeprecationWarning, match="PROPERTY_CHECKS"):
        assert checks.CHECKS is checks.PROPERTY_CHECKS
    with pytest.raises(AttributeError):
        checks.no_such_name  # noqa: B018


def test_deterministic():
    a, b = check(gce, ["calibrated", "convex"]), check(gce, ["calibrated", "convex"])
    assert [v.evidence for v in a] == [v.evidence for v in b]


# ------------------------------------------------------------------------------------------ CLI
LOSS_FILE = """
import torch

def good(logits, target, reduction="none"):
    return -torch.log_softmax(logits, -1).gather(1, target[:, None])[:, 0]

def bad(logits, target):
    return torch.logsumexp(logits, -1) + logits.gather(1, target[:, None])[:, 0]
"""


def test_cli_registered_name(capsys):
    assert main(["cross_entropy", "-p", "calibrated,convex"]) == 0
    out = capsys.readouterr().out
    assert "calibrated" in out and "HOLDS" in out and "argmax" in out


def test_cli_user_file_and_claims(tmp_path, capsys):
    f = tmp_path / "my_losses.py"
    f.write_text(LOSS_FILE)
    assert main([f"{f}:good", "--claims", "calibrated,proper,convex"]) == 0
    assert main([f"{f}:bad", "--claims", "calibrated", "-p", "calibrated"]) == 1
    out = capsys.readouterr().out
    assert "FAILS" in out and "claimed but false: calibrated" in out


def test_cli_module_function_json_and_options(tmp_path, capsys, monkeypatch):
    (tmp_path / "usermod.py").write_text(LOSS_FILE)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["usermod:good", "-p", "proper", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["verdicts"][0]["name"] == "proper" and d["verdicts"][0]["status"] == "holds"
    assert main(["focal", "-p", "proper", "-o", "gamma=0.0"]) == 0
    capsys.readouterr()


def test_cli_usage_errors(capsys):
    assert main(["nosuchloss"]) == 2
    assert main(["nomodule_xyz:fn"]) == 2
    assert main(["cross_entropy", "-p", "nonsense"]) == 2
    assert "losskit check" in capsys.readouterr().err


def test_cli_via_losskit_entry_point(capsys):
    from losskit.cli import main as cli_main

    assert cli_main(["check", "js_divergence", "-p", "divergence"]) == 0
    assert "D(p,p)" in capsys.readouterr().out


def test_links():
    z = torch.tensor([[2.0, 0.5, -1.0, 0.3]], dtype=torch.float64)
    torch.testing.assert_close(stablemax(z), torch.tensor([[3, 1.5, 0.5, 1.3]], dtype=torch.float64) / 6.3)
    torch.testing.assert_close(sparsemax(z), torch.tensor([[1.0, 0, 0, 0]], dtype=torch.float64))
    z = torch.tensor([[0.5, 0.2, 0.1]], dtype=torch.float64)  # tau = (0.8 - 1)/3
    torch.testing.assert_close(sparsemax(z), z - (0.8 - 1) / 3)


def test_entmax_link_matches_sparsemax_and_entmax_package():
    from losskit.checks._links import entmax

    z = torch.randn(6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 2
    torch.testing.assert_close(entmax(2.0)(z), sparsemax(z), atol=1e-12, rtol=0)
    ent = pytest.importorskip("entmax")
    torch.testing.assert_close(entmax(1.5)(z), ent.entmax15(z, dim=-1), atol=1e-9, rtol=0)


def sum_exp(logits, target):
    """Comp-sum tau = 0: sum_{k != y} exp(z_k - z_y). Calibrated, convex, gradient unbounded."""
    d = logits - logits.gather(1, target[:, None])
    return d.exp().sum(-1) - 1


def test_gradient_behaviour_at_extreme_margins():
    r = check(ce, ["gradient_on_errors", "lipschitz"])
    assert r["gradient_on_errors"].holds and r["lipschitz"].holds
    assert r["gradient_on_errors"].numbers["wrong"][300.0] == pytest.approx((1 + 1 / 3) ** 0.5, rel=1e-9)
    m = check(mae, ["gradient_on_errors", "lipschitz"])
    assert m["gradient_on_errors"].fails and m["lipschitz"].holds  # MAE: no gradient on confident mistakes
    assert check(gce, ["gradient_on_errors"])["gradient_on_errors"].fails
    s = check(sum_exp, ["gradient_on_errors", "lipschitz", "calibrated", "convex"])
    assert s["gradient_on_errors"].holds and s["lipschitz"].fails
    assert s["calibrated"].holds and s["convex"].holds


def test_stochastic_loss_is_seeded_and_global_rng_untouched():
    def noisy(logits, target):
        return ce(logits, target) * (1 + 0.01 * torch.rand(len(target), dtype=logits.dtype))

    state = torch.get_rng_state()
    a, b = check(noisy, ["calibrated", "nonnegative"]), check(noisy, ["calibrated", "nonnegative"])
    assert [v.evidence for v in a] == [v.evidence for v in b]
    assert torch.equal(state, torch.get_rng_state())


def test_cli_all_summarises_the_registry(capsys):
    rc = main(["--all", "--family", "classification"])
    out = capsys.readouterr().out
    assert "cross_entropy" in out and "claims hold" in out and "objectives" in out
    assert rc == (1 if "FALSE" in out else 0)
    assert main(["--all", "--family", "nosuchfamily"]) == 2
    assert main([]) == 2


def crammer_singer(logits, target):
    """max_k [1(k != y) + z_k - z_y]_+ : not calibrated when no class has p > 1/2 (Tewari & Bartlett 2007)."""
    d = logits - logits.gather(1, target[:, None]) + 1 - torch.nn.functional.one_hot(target, logits.shape[1])
    return d.clamp_min(0).amax(1)


def test_crammer_singer_hinge_is_convex_but_not_calibrated():
    r = check(crammer_singer, ["calibrated", "convex", "nonnegative"])
    assert r["convex"].holds and r["nonnegative"].holds and r["calibrated"].fails, str(r)


def test_softmax_collapse():
    assert check(ce, ["no_softmax_collapse"])["no_softmax_collapse"].fails  # float32 CE at [100, 0, 0, 0]: 0
    r = check(stablemax_ce, ["no_softmax_collapse"])
    assert r["no_softmax_collapse"].holds and r["no_softmax_collapse"].numbers["min_loss"] == pytest.approx(
        -torch.log(torch.tensor(101 / 104)).item(), rel=1e-5)


def test_losskit_module_instance_uses_its_options():
    r = check(losskit.FocalLoss(gamma=0.0, reduction="sum"), ["proper", "convex"])
    assert r.loss == "focal" and r["proper"].holds and r["convex"].holds  # gamma = 0: cross-entropy
    assert check(losskit.FocalLoss(gamma=2.0), ["proper"])["proper"].fails


def test_batch_coupled_objective_gets_whole_batch_checks():
    from losskit._core.inputs import BINARY_LOGITS, binary_example

    @losskit.objective("_test_soft_error_rate", family="test", input_kind=BINARY_LOGITS, example=binary_example,
                       properties={"nonnegative", "bounded"}, per_sample=False)
    def soft_error_rate(logits, target, *, reduction="mean"):
        a = torch.sigmoid(logits)
        return 1 - (target * a + (1 - target) * (1 - a)).mean()

    try:
        r = check("_test_soft_error_rate")
        assert r.ok and r["bounded"].holds and r["nonnegative"].holds and r["convex"].fails
        assert r["calibrated"].status == "skipped" and "batch-coupled" in r["calibrated"].evidence
    finally:
        losskit._core.unregister("_test_soft_error_rate")


def test_other_input_kinds_use_the_registry_example():
    from losskit._core import Example, InputKind, fail

    kind = InputKind("test multi-hot", "logits (N, K) and multi-hot targets (N, K)")

    def example(gen, dtype):
        z = torch.randn(5, 4, generator=gen, dtype=torch.float64)
        t = (torch.rand(5, 4, generator=gen) < 0.5).double()
        return Example({"logits": z.to(dtype), "target": t.to(dtype)}, {"pos_weight": 1.0}, grad=("logits",))

    @losskit.objective("_test_multilabel_bce", family="test", input_kind=kind, example=example,
                       properties={"nonnegative", "convex", "permutation_equivariant"})
    def multilabel_bce(logits, target, *, pos_weight, reduction="mean"):
        per = (pos_weight * target * torch.nn.functional.softplus(-logits)
               + (1 - target) * torch.nn.functional.softplus(logits)).sum(-1)
        return per if reduction == "none" else per.mean()

    prob_kind = InputKind("test probabilities", "probabilities (N, K)")

    @losskit.objective("_test_prob_entropy", family="test", input_kind=prob_kind,
                       example=lambda gen, dtype: Example({"p": torch.full((3, 4), 0.25, dtype=dtype)}, grad=("p",)))
    def prob_entropy(p, *, reduction="mean"):
        if (p < 0).any():
            raise fail("p", "probabilities", "negative values")
        return -(p * p.log()).sum(-1)

    try:
        r = check("_test_multilabel_bce")
        assert r.kind.startswith("example") and r.ok, str(r)
        assert r["convex"].holds and r["nonnegative"].holds and r["permutation_equivariant"].holds
        assert r["shift_invariant"].fails and r["bounded"].fails
        assert "calibrated" not in r  # needs class labels
        s = check("_test_prob_entropy", ["nonnegative"])
        assert s["nonnegative"].status == "skipped" and "rejects random inputs" in s["nonnegative"].evidence
    finally:
        losskit._core.unregister("_test_multilabel_bce")
        losskit._core.unregister("_test_prob_entropy")


def test_known_kind_with_extra_inputs_falls_back_to_the_example():
    from losskit._core import Example
    from losskit._core.inputs import LOGITS_LABELS

    def example(gen, dtype):
        z = torch.randn(5, 4, generator=gen, dtype=torch.float64)
        return Example({"logits": z.to(dtype), "target": torch.randint(0, 4, (5,), generator=gen),
                        "tau": torch.rand(5, generator=gen, dtype=torch.float64) + 0.5}, grad=("logits",))

    @losskit.objective("_test_tempered_ce", family="test", input_kind=LOGITS_LABELS, example=example,
                       properties={"convex", "shift_invariant", "permutation_equivariant"})
    def tempered_ce(logits, target, tau, *, reduction="mean"):
        per = -torch.log_softmax(logits / tau[:, None], -1).gather(1, target[:, None])[:, 0]
        return per if reduction == "none" else per.mean()

    try:
        r = check("_test_tempered_ce")
        assert r.kind.startswith("example") and r.ok, str(r)
        assert r["permutation_equivariant"].holds  # the class indices are relabelled with the logits
    finally:
        losskit._core.unregister("_test_tempered_ce")


@pytest.mark.parametrize("k", [2, 12])
def test_other_numbers_of_classes(k):
    r = check(ce, ["calibrated", "proper", "symmetric"], num_classes=k)
    assert r["calibrated"].holds and r["proper"].holds and r["symmetric"].fails, str(r)
    assert check(mae, ["symmetric", "proper"], num_classes=k)["symmetric"].numbers["max"] == pytest.approx(k - 1)


def test_cli_binary_kind_and_bad_specs(tmp_path, capsys):
    f = tmp_path / "binary_losses.py"
    f.write_text("import torch\n\ndef hinge(x, y):\n    return torch.clamp(1 - (2 * y - 1) * x, min=0)\n")
    assert main([f"{f}:hinge", "--kind", "binary", "--claims", "calibrated,convex", "-p", "calibrated,convex"]) == 0
    assert "sign(x*)" in capsys.readouterr().out
    assert main([f"{f}:nosuchfn"]) == 2
    assert main([f"{tmp_path / 'missing.py'}:hinge"]) == 2
    assert main(["cross_entropy", "-o", "nokeyvalue"]) == 2
    err = capsys.readouterr().err
    assert "has no attribute" in err and "no file" in err and "key=value" in err


# ------------------------------------------------------------- trust at the edges (issue 16)
NAN, INF = float("nan"), float("inf")


def _const(value):
    """A loss that returns ``value`` for every sample, with a zero (finite) gradient: value + 0 * x."""
    def loss(x, *aux):
        return torch.full((x.shape[0],), value, dtype=x.dtype) + 0 * x.reshape(x.shape[0], -1).sum(1)
    return loss


def nan_times_x(logits, target):
    """NaN values and NaN gradients everywhere."""
    return NAN * logits.sum(-1)


def ce_nan_far(logits, target):
    """Cross-entropy, NaN once a logit exceeds 50 in magnitude (finite gradient everywhere)."""
    return ce(logits, target) + torch.where(logits.abs().amax(-1) > 50, NAN, 0.0)


def ce_inf_far(logits, target):
    """Cross-entropy, +inf once a logit exceeds 50 in magnitude."""
    return ce(logits, target) + torch.where(logits.abs().amax(-1) > 50, INF, 0.0)


def ce_matrix(logits, target):
    """Returns the (N, K) matrix -log softmax(z) instead of per-sample losses."""
    return -torch.log_softmax(logits, -1)


@pytest.mark.parametrize("kind", ["multiclass", "binary", "distributions", "logits"])
@pytest.mark.parametrize("value", [NAN, INF, -INF], ids=["nan", "inf", "-inf"])
def test_non_finite_everywhere_certifies_nothing(kind, value):
    fn = _const(value) if kind != "logits" else (lambda x: _const(value)(x))
    r = check(fn, kind=kind)
    assert r.verdicts and not any(v.holds for v in r), str(r)
    assert all(v.fails for v in r if v.status != "skipped"), str(r)
    for v in r:
        if v.fails:
            assert "non-finite" in v.evidence, str(r)


def test_nan_values_and_gradients_certify_nothing():
    r = check(nan_times_x, ["convex", "lipschitz", "bounded", "nonnegative", "calibrated", "symmetric"])
    assert not any(v.holds for v in r), str(r)


@pytest.mark.parametrize("fn", [ce_nan_far, ce_inf_far])
def test_non_finite_far_out_is_not_evidence(fn):
    """Finite where the convexity and calibration probes look, non-finite at large logits: the checks
    that look there (bounded, lipschitz, nonnegative, gradient_on_errors, finite_extreme) do not hold."""
    r = check(fn)
    for name in ("bounded", "lipschitz", "gradient_on_errors", "finite_extreme"):
        assert r[name].fails and "non-finite" in r[name].evidence, str(r)
    assert r["calibrated"].holds and r["convex"].holds, str(r)  # their evidence is finite: still certified
    # +inf at magnitude >= 100 is an overflowing large loss, still >= 0; NaN there is no evidence
    assert r["nonnegative"].holds == (fn is ce_inf_far), str(r)
    if fn is ce_inf_far:
        assert "overflow to +inf" in r["nonnegative"].evidence


def test_wrong_output_shape_is_refused_before_any_check():
    calls = []

    def counted(logits, target):
        calls.append(logits.shape)
        return ce_matrix(logits, target)

    with pytest.raises(losskit.LossInputError, match=r"loss: expected .*shape \(N,\).*got .*\(\d+, 4\)"):
        check(counted, ["convex"])
    assert len(calls) == 1  # refused on the first probe, no property ran
    with pytest.raises(losskit.LossInputError, match=r"shape \(N,\)"):
        check(lambda x, y: x.sum(-1)[:-1], ["convex"])  # (N - 1,)
    with pytest.raises(losskit.LossInputError, match=r"shape \(N,\)"):
        check(lambda x, y: torch.stack([x, x], -1), kind="binary", properties=["convex"])


def test_cli_refuses_or_fails_non_finite_and_misshapen_losses(tmp_path, capsys):
    f = tmp_path / "edge_losses.py"
    f.write_text("import torch\n\n"
                 "def nan_loss(logits, target):\n"
                 "    return torch.full((logits.shape[0],), float('nan'), dtype=logits.dtype) + 0 * logits.sum(-1)\n\n"
                 "def inf_loss(logits, target):\n"
                 "    return torch.full((logits.shape[0],), float('inf'), dtype=logits.dtype) + 0 * logits.sum(-1)\n\n"
                 "def matrix_loss(logits, target):\n"
                 "    return -torch.log_softmax(logits, -1)\n")
    for name in ("nan_loss", "inf_loss"):
        assert main([f"{f}:{name}", "--claims", "convex,lipschitz"]) == 1
        out = capsys.readouterr().out
        assert "claimed but false: convex, lipschitz" in out and "non-finite" in out
    assert main([f"{f}:matrix_loss", "--claims", "convex,lipschitz"]) == 1
    err = capsys.readouterr().err
    assert "loss: expected" in err and "shape (N,)" in err
