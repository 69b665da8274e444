"""A department's allow-list names identities (URI SANs), never common names."""

from __future__ import annotations

import grpc
import pytest

from adapters.sdk import FEDERATION_IDENTITY, serve
from adapters.testing import InMemoryStore
from gateway.domain.catalog import load_catalog
from gateway.errors import ConfigError

# Any credentials will do: the allow-list is checked before anything listens.
CREDS = grpc.local_server_credentials()


@pytest.mark.parametrize("entry", ["credit-gateway", "gateway", "", ":federation"])
async def test_a_common_name_is_refused_as_an_identity(entry: str) -> None:
    store = InMemoryStore.from_catalog(load_catalog(), "tax")
    with pytest.raises(ConfigError, match="not a URI"):
        await serve(
            store, "127.0.0.1:0", server_credentials=CREDS, allowed_clients=frozenset({entry})
        )


async def test_without_an_allow_list_tls_is_refused() -> None:
    store = InMemoryStore.from_catalog(load_catalog(), "tax")
    with pytest.raises(ConfigError, match=FEDERATION_IDENTITY):
        await serve(store, "127.0.0.1:0", server_credentials=CREDS, allowed_clients=None)
