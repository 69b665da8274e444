"""Stable lower-case names of the contract's enums, for metric labels, audit
records and people: ``SECTION_STATUS_TIMED_OUT`` -> ``timed_out``."""

from __future__ import annotations

from gateway.domain.enums import SubjectType
from protos.credit.v1 import common_pb2, query_pb2

__all__ = ["MODE", "REASON", "STATUS", "SUBJECT_TYPE", "SUBJECT_TYPE_CODE"]

STATUS: dict[query_pb2.SectionStatus.ValueType, str] = {
    v: k.removeprefix("SECTION_STATUS_").lower() for k, v in query_pb2.SectionStatus.items()
}
REASON: dict[query_pb2.WithholdReason.ValueType, str] = {
    v: k.removeprefix("WITHHOLD_REASON_").lower() for k, v in query_pb2.WithholdReason.items()
}
MODE: dict[query_pb2.QueryMode.ValueType, str] = {
    v: k.removeprefix("QUERY_MODE_").lower() for k, v in query_pb2.QueryMode.items()
}
SUBJECT_TYPE: dict[common_pb2.SubjectType.ValueType, SubjectType] = {
    common_pb2.SUBJECT_TYPE_ENTERPRISE: SubjectType.ENTERPRISE,
    common_pb2.SUBJECT_TYPE_PERSON: SubjectType.PERSON,
}
SUBJECT_TYPE_CODE: dict[str, common_pb2.SubjectType.ValueType] = {
    name: code for code, name in SUBJECT_TYPE.items()
}
