"""The enums read, compare and encode as the bare strings they replace."""

from __future__ import annotations

import json

from gateway.audit.records import canonical_json
from gateway.domain.enums import Mode, SubjectType
from gateway.domain.names import SUBJECT_TYPE
from protos.credit.v1 import common_pb2


def test_members_are_their_values() -> None:
    assert SubjectType.ENTERPRISE == "enterprise" and f"{SubjectType.PERSON}" == "person"
    assert {"enterprise": 1}[SubjectType.ENTERPRISE] == 1
    assert json.dumps({"t": SubjectType.PERSON, "m": Mode.PAID}) == '{"t": "person", "m": "paid"}'
    assert canonical_json({"subject_type": SubjectType.ENTERPRISE}) == canonical_json(
        {"subject_type": "enterprise"}
    )


def test_the_wire_codes_name_the_members() -> None:
    assert SUBJECT_TYPE[common_pb2.SUBJECT_TYPE_ENTERPRISE] is SubjectType.ENTERPRISE
    assert SUBJECT_TYPE[common_pb2.SUBJECT_TYPE_PERSON] is SubjectType.PERSON
