"""gRPC server reflection, as ``grpc.reflection.v1`` and ``grpc.reflection.v1alpha``.

    enable_reflection(["credit.v1.QueryService", ...], server)

grpcio-reflection (1.85) serves only ``v1alpha``; current clients (grpcurl since
1.8.8, grpc-go, tonic, Postman's newer versions) ask ``v1`` first. The ``v1``
schema (grpc-proto ``grpc/reflection/v1/reflection.proto``) is ``v1alpha``'s
under another package name, field for field, so the ``v1`` descriptors are
derived here from grpcio-reflection's ``v1alpha`` file and the same servicer
answers both. Both names are listed by ``list_services``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

__all__ = ["V1ALPHA_SERVICE_NAME", "V1_SERVICE_NAME", "enable_reflection"]

V1ALPHA_SERVICE_NAME: str = reflection.SERVICE_NAME
V1_SERVICE_NAME = "grpc.reflection.v1.ServerReflection"
_V1_FILE = "grpc/reflection/v1/reflection.proto"
_ALPHA = "grpc.reflection.v1alpha"
_V1 = "grpc.reflection.v1"


def _v1_file(pool: Any) -> Any:
    """The ``v1`` file descriptor in ``pool``, added once from the ``v1alpha`` one."""
    try:
        return pool.FindFileByName(_V1_FILE)
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    proto.name, proto.package = _V1_FILE, _V1
    proto.ClearField("options")  # java/go package options name v1alpha
    alpha, v1 = f".{_ALPHA}.", f".{_V1}."
    for message in proto.message_type:
        for f in message.field:
            if f.HasField("type_name"):
                f.type_name = f.type_name.replace(alpha, v1)
    for service in proto.service:
        for m in service.method:
            m.input_type = m.input_type.replace(alpha, v1)
            m.output_type = m.output_type.replace(alpha, v1)
    pool.Add(proto)
    return pool.FindFileByName(_V1_FILE)


def enable_reflection(service_names: Iterable[str], server: grpc.aio.Server) -> None:
    """Serve reflection on ``server`` under both versions, listing ``service_names``
    and the two reflection services."""
    pool = descriptor_pool.Default()
    _v1_file(pool)  # so that clients can describe the v1 service itself
    names = [*service_names, V1ALPHA_SERVICE_NAME, V1_SERVICE_NAME]
    servicer = reflection.aio.ReflectionServicer(names, pool=pool)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    # The servicer works on v1alpha messages; a v1 message has the same bytes.
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(V1_SERVICE_NAME, {"ServerReflectionInfo": handler}),)
    )
