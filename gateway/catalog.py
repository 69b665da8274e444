"""Old import path of :mod:`gateway.domain.catalog`,
kept for departments' code (adapters.sql, adapters.testing)."""

from gateway.domain.catalog import *  # noqa: F403
from gateway.domain.catalog import __all__ as __all__
