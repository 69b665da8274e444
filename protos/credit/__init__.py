"""Proto package ``credit``: the contracts live in version ``v1``."""
