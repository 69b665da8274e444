"""Old import path of :mod:`gateway.domain.identifiers`,
kept for departments' code (adapters.sdk, adapters.synth)."""

from gateway.domain.identifiers import *  # noqa: F403
from gateway.domain.identifiers import __all__ as __all__
