"""Every registered objective's claimed properties hold under ``losskit check``.

One test per objective: it runs only the claimed properties (fast), fails on any claim the checks find
false, and skips (with the reason) objectives whose claims it cannot test. Input kinds the checker knows
(multiclass, binary, two distributions, logits) get every check; other kinds get the kind-free checks on
random inputs shaped like the registry's example. Claims known to be false are listed in ``KNOWN_FALSE`` with the evidence, as
strict xfails: the test starts failing when the claim is fixed, so the entry must then be removed.
"""

import pytest

import losskit
from losskit.checks import INPUT_KINDS, check

#: (objective, property) -> why the claim is false (found by this test; reported to the family's owner)
KNOWN_FALSE: dict[tuple[str, str], str] = {
    # e.g. ("binary_focal", "calibrated"): "alpha=0.25 moves the decision threshold to eta = 0.75" (found by
    # this test; the claim has since been dropped, see tests/test_checks.py::test_binary_focal_alpha_...)
}

ENTRIES = [o for o in losskit.objectives() if o.properties]


@pytest.mark.parametrize("entry", ENTRIES, ids=[o.name for o in ENTRIES])
def test_claimed_properties_hold(entry):
    if INPUT_KINDS.get(entry.input_kind.name) is None and entry.example is None:
        pytest.skip(f"input kind {entry.input_kind.name!r} without an example generator: nothing to check on")
    report = check(entry.name, sorted(entry.properties))
    checked = [v for v in report if v.status != "skipped"]
    if not checked:
        pytest.skip("no claim checkable: " + "; ".join(f"{v.name}: {v.evidence}" for v in report))
    false = {v.name: v.evidence for v in report.failed_claims}
    known = {p: why for (name, p), why in KNOWN_FALSE.items() if name == entry.name and p in false}
    unexpected = {p: ev for p, ev in false.items() if p not in known}
    assert not unexpected, f"{entry.name}: claimed but false:\n" + "\n".join(
        f"  {p}: {ev}" for p, ev in unexpected.items()) + f"\n{report}"
    if known:
        pytest.xfail("; ".join(f"{p}: {why}" for p, why in known.items()))
    stale = [p for (name, p) in KNOWN_FALSE if name == entry.name and p in entry.properties and p not in false]
    assert not stale, f"{entry.name}: {stale} listed in KNOWN_FALSE but now hold: remove the entries"

