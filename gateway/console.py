"""Old import path of :mod:`gateway.cli.console`,
kept for departments' code (adapters.cli)."""

from gateway.cli.console import *  # noqa: F403
from gateway.cli.console import __all__ as __all__
