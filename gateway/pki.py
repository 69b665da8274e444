"""Old import path of the development PKI, kept for scripts written against it.

Development tooling: production code imports :mod:`gateway.auth.certs` instead (a test
checks that nothing in production imports this module or :mod:`gateway.dev`).
"""

from gateway.dev.pki import *  # noqa: F403
from gateway.dev.pki import __all__ as __all__
