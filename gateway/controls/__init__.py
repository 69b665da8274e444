"""Live security controls: consent revocations, agency suspensions, revoked client
certificates and consent use counts, shared by every gateway process naming one store.

>>> from gateway.stores.sqlite.controls import SQLiteControlsStore
>>> store = SQLiteControlsStore("controls.sqlite")          # doctest: +SKIP
>>> store.suspend_agency("bank_x", officer="officer_a", reason="key leaked")  # doctest: +SKIP
>>> store.snapshot().agency_suspended("bank_x")        # doctest: +SKIP
True
"""

from gateway.controls.store import (
    CertificateRevocation,
    ConsentState,
    ConsentStatus,
    ControlsSnapshot,
    ControlsStore,
    ControlsStoreError,
    normalize_serial,
    normalize_thumbprint,
)

__all__ = [
    "CertificateRevocation",
    "ConsentState",
    "ConsentStatus",
    "ControlsSnapshot",
    "ControlsStore",
    "ControlsStoreError",
    "normalize_serial",
    "normalize_thumbprint",
]
