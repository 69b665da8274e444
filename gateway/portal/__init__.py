"""The public enterprise lookup page (企业信用信息公示查询), ``credit-gateway portal``.

Anyone looks an enterprise up by unified social credit code and sees its public-tier credit
records and list status, in Chinese, free, without an account or cookies; persons are never
looked up. The page is an agency of the gateway like any other (``portal`` in
``policies/agencies.toml``, kind ``public_portal``: its own certificate and token, the public
tier only, free mode, purpose ``public_lookup``), so every lookup is decided, counted and
audited by the gateway.

* :mod:`~gateway.portal.app`: the web application (Starlette, Jinja2 templates);
* :mod:`~gateway.portal.codes`: what a visitor typed, judged and explained in Chinese;
* :mod:`~gateway.portal.view` and :mod:`~gateway.portal.lists`: an answer as the page shows it;
* :mod:`~gateway.portal.limiter`: the per-client-address rate limit;
* :mod:`~gateway.portal.sources`: the seams to the gateway (lookups, reports);
* :mod:`~gateway.portal.config` and :mod:`~gateway.portal.serve`: settings and uvicorn.
"""

from gateway.portal.app import create_app
from gateway.portal.config import PortalConfig, load_portal_config
from gateway.portal.serve import PortalServer

__all__ = ["PortalConfig", "PortalServer", "create_app", "load_portal_config"]
