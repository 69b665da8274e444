"""Start-up refuses what it cannot vouch for, and leaves nothing running."""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path

import pytest

from adapters.sdk import FEDERATION_IDENTITY, bound_port, mtls_server_credentials, serve
from adapters.testing import InMemoryStore
from gateway.dev.devstack import DevStack
from gateway.domain.catalog import load_catalog
from gateway.errors import ConfigError
from gateway.federation import DepartmentState
from gateway.runtime.assembly import build_gateway
from gateway.runtime.config import DepartmentConfig, load_config

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_a_department_answering_with_another_departments_certificate(
    stack: DevStack,
) -> None:
    """The market's key cannot stand in for the tax office, though both come from our CA:
    the gateway starts, and keeps the impostor out (tax is never asked)."""
    pki = stack.pki
    impostor = await serve(
        InMemoryStore.from_catalog(load_catalog(), "tax"),
        "127.0.0.1:0",
        server_credentials=mtls_server_credentials(
            pki.department_cert("market").read_bytes(),
            pki.department_key("market").read_bytes(),
            pki.ca_cert.read_bytes(),
        ),
        allowed_clients=frozenset({FEDERATION_IDENTITY}),
    )
    try:
        config = load_config(stack.config_path)
        departments = dict(config.departments)
        departments["tax"] = DepartmentConfig("tax", f"127.0.0.1:{bound_port(impostor)}")
        config = dataclasses.replace(
            config,
            departments=departments,
            federation=dataclasses.replace(config.federation, describe_timeout_ms=2000),
            audit=None,
            billing=None,
            insecure_dev_plaintext=True,  # only so that no second audit log is opened
        )
        gateway = await build_gateway(config)
        await gateway.start()
        try:
            tax = gateway.clients["tax"]
            assert tax.state is DepartmentState.REFUSED
            assert tax.detail == (
                "department tax is kept out: the server at its address did not present "
                "the department's own certificate"
            )
            assert gateway.clients["market"].state is DepartmentState.SERVING
            sample = gateway.metrics.registry.get_sample_value(
                "credit_gateway_department_state", {"department": "tax", "state": "refused"}
            )
            assert sample == 1
        finally:
            await gateway.stop(0)
    finally:
        await impostor.stop(0)


async def test_busy_metrics_port_stops_startup_cleanly(stack: DevStack, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = dataclasses.replace(
            load_config(stack.config_path),
            metrics_listen=f"127.0.0.1:{port}",
            audit=None,
            billing=None,
            insecure_dev_plaintext=True,
        )
        gateway = await build_gateway(config)
        with pytest.raises(ConfigError) as exc:
            await gateway.start()
    assert exc.value.key == "gateway.metrics_listen"
    assert gateway._server is None and not gateway.clients
