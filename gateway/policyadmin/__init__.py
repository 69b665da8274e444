"""Policy administration: versions of who-sees-what, changed while serving,
tested, reviewed by a second officer, reversible and on the record.

* :mod:`gateway.policyadmin.store`: immutable numbered versions, approvals, check results
  and the activation history (:class:`VersionStore`; its SQLite and PostgreSQL backends
  are in gateway/stores/);
* :mod:`gateway.policyadmin.loading`: a version's files -> validated parts, problems, the
  test matrix, its decider (:class:`DeciderRecipe`);
* :mod:`gateway.policyadmin.analysis`: ``diff`` and ``replay``;
* :mod:`gateway.policyadmin.admin`: the workflow and the hot switch
  (:class:`PolicyAdministrator`);
* :mod:`gateway.api.policy_admin`: the ``credit.v1.PolicyAdmin`` gRPC servicer;
* :mod:`gateway.cli.policy`: ``credit-gateway policy``.

Wiring: ``[policy] store = "policy-versions.sqlite"`` in the gateway configuration
(:func:`gateway.runtime.assembly.build_gateway`).
"""

from gateway.policyadmin.admin import PolicyAdministrator, Serving, VersionView
from gateway.policyadmin.errors import PolicyStoreError, PolicyWorkflowError
from gateway.policyadmin.loading import DeciderRecipe, LoadedVersion, version_label
from gateway.policyadmin.store import (
    FILE_NAMES,
    Activation,
    Approval,
    CheckResult,
    PolicyVersion,
    VersionStore,
)

__all__ = [
    "FILE_NAMES",
    "Activation",
    "Approval",
    "CheckResult",
    "DeciderRecipe",
    "LoadedVersion",
    "PolicyAdministrator",
    "PolicyStoreError",
    "PolicyVersion",
    "PolicyWorkflowError",
    "Serving",
    "VersionStore",
    "VersionView",
    "version_label",
]
