"""One development PKI shared by the unit tests (made once: key generation is the cost)."""

from __future__ import annotations

import pytest

from gateway.dev.pki import Pki
from tests.helpers import make_pki


@pytest.fixture(scope="session")
def auth_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(
        tmp_path_factory,
        name="auth-pki",
        departments=["tax", "court"],
        agencies=["ndrc", "bank", "suspended_agency", "stranger"],
        officers=["officer_a"],
        auditors=["auditor"],
        finance=["finance"],
    )
