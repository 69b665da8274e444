"""Policy files shipped with credit-gateway: the published credit-information
catalog (``catalog.toml``), and the Casbin model, policy, purposes and price
list written by the security officers.

This package holds data, not code; it is a package so that the files are
installed with the distribution (see ``[tool.setuptools.package-data]``).
"""
