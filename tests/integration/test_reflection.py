"""Server reflection under both names, ``grpc.reflection.v1`` (what current clients ask
first) and ``grpc.reflection.v1alpha`` (what grpcurl 1.8.6 asks)."""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from gateway.dev.devstack import DevStack

pytestmark = pytest.mark.asyncio(loop_scope="module")

GRPCURL = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")
V1 = "grpc.reflection.v1"


async def test_grpcurl_lists_and_describes_both_versions(stack: DevStack) -> None:
    demo = stack.describe()
    files = demo["agencies"]["ndrc"]
    base = [GRPCURL, "-cacert", demo["ca_cert"], "-cert", files["cert"], "-key", files["key"]]
    for args in (["list"], ["describe", f"{V1}.ServerReflection"]):
        proc = await asyncio.create_subprocess_exec(
            *base, stack.gateway.address, *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        text = out.decode()
        if args == ["list"]:
            assert {f"{V1}.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"} <= set(
                text.split()
            )
        else:
            assert "rpc ServerReflectionInfo" in text and f".{V1}.ServerReflectionRequest" in text


async def test_a_v1_client_lists_services_and_reads_descriptors(stack: DevStack) -> None:
    pool = descriptor_pool.Default()  # the gateway in this process added the v1 file
    request_cls = message_factory.GetMessageClass(
        pool.FindMessageTypeByName(f"{V1}.ServerReflectionRequest")
    )
    response_cls = message_factory.GetMessageClass(
        pool.FindMessageTypeByName(f"{V1}.ServerReflectionResponse")
    )
    channel, _ = stack.channel("agencies", "ndrc")
    async with channel:
        call = channel.stream_stream(
            f"/{V1}.ServerReflection/ServerReflectionInfo",
            request_serializer=request_cls.SerializeToString,
            response_deserializer=response_cls.FromString,
        )
        requests = [
            request_cls(list_services=""),
            request_cls(file_containing_symbol="credit.v1.QueryService"),
        ]
        responses = [r async for r in call(iter(requests), timeout=30)]
    listed, found = responses
    names = {s.name for s in listed.list_services_response.service}
    assert {"credit.v1.QueryService", "credit.v1.AuditService", f"{V1}.ServerReflection"} <= names
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in found.file_descriptor_response.file_descriptor_proto
    ]
    assert any(
        f.package == "credit.v1" and any(s.name == "QueryService" for s in f.service) for f in files
    )
    assert not found.HasField("error_response")
