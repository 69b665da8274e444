"""Tiered access with Casbin: which fields an agency may see, for which purpose
and mode, with which consent.

* :mod:`gateway.policy.rules`: ``policies/model.conf`` + ``policies/policy.csv`` ->
  a validated :class:`PolicySet` (refusals name the file and line);
* :mod:`gateway.policy.decider`: :class:`PolicyDecider`, the production
  :class:`~gateway.pipeline.decision.Decider`, and :func:`build_decider`, its entry point;
* :mod:`gateway.policy.testing`: the policy test matrix (``policies/tests/*.toml``).

Consent tokens are :mod:`gateway.policy.consent`.
"""

from gateway.policy.decider import SELF_QUERY_PURPOSE, PolicyDecider, build_decider
from gateway.policy.rules import (
    DEFAULT_MODEL_PATH,
    DEFAULT_POLICY_PATH,
    Grant,
    PolicySet,
    RoleLink,
    load_policy_set,
    parse_policy_set,
)

__all__ = [
    "DEFAULT_MODEL_PATH",
    "DEFAULT_POLICY_PATH",
    "SELF_QUERY_PURPOSE",
    "Grant",
    "PolicyDecider",
    "PolicySet",
    "RoleLink",
    "build_decider",
    "load_policy_set",
    "parse_policy_set",
]
