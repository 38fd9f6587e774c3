"""One parametrised suite over the whole registry: registering an objective enrols it here."""

import pytest

import losskit
from losskit.testing.conformance import CHECKS, Skip, explain_skip

ENTRIES = losskit.objectives()
SLOW = {"compile"}


def _params():
    for entry in ENTRIES:
        for check in CHECKS:
            marks = [pytest.mark.compile] if check in SLOW else []
            yield pytest.param(entry, check, id=f"{entry.name}-{check}", marks=marks)


@pytest.mark.parametrize(("entry", "check"), list(_params()))
def test_conformance(entry, check):
    try:
        CHECKS[check](entry)
    except Skip as s:
        pytest.skip(explain_skip(entry, check, s))


def test_registry_is_populated():
    assert len(ENTRIES) >= 6
    assert {"cross_entropy", "focal", "kl_divergence"} <= set(losskit.list())
