"""The contracts compile with ``protos/`` as the proto root, as any client compiles them
(they once imported ``protos/credit/v1/...``, so ``-I protos`` failed)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2
from grpc_tools import protoc

from protos.generate import _package_imports

ROOT = Path(__file__).resolve().parents[2]
PROTOS = ROOT / "protos"
FILES = sorted(str(p.relative_to(PROTOS)) for p in (PROTOS / "credit" / "v1").glob("*.proto"))
GRPCURL = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")


def test_every_import_is_relative_to_the_proto_root() -> None:
    for name in FILES:
        for imported in re.findall(r'^import "([^"]+)";', (PROTOS / name).read_text(), re.M):
            assert imported.startswith(("credit/v1/", "google/protobuf/")), (name, imported)
            if imported.startswith("credit/"):
                assert (PROTOS / imported).is_file(), (name, imported)


def test_protoc_with_the_proto_root_compiles_every_file(tmp_path: Path) -> None:
    wkt = Path(protoc.__file__).parent / "_proto"  # google/protobuf/*.proto, as protoc ships
    out = tmp_path / "all.pb"
    code = protoc.main(["protoc", f"-I{PROTOS}", f"-I{wkt}", f"--descriptor_set_out={out}", *FILES])
    assert code == 0
    assert out.stat().st_size > 1000
    # Every contract compiled (a count would break each time a contract is added).
    compiled = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    assert {f.name for f in compiled.file} == set(FILES)
    assert len(FILES) >= 9
    assert {"credit/v1/objections.proto", "credit/v1/subject.proto"} <= set(FILES)


def test_grpcurl_reads_the_query_contract_with_import_path_protos() -> None:
    proc = subprocess.run(
        [GRPCURL, "-import-path", "protos", "-proto", "credit/v1/query.proto",
         "describe", "credit.v1.QueryService"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "rpc Query ( .credit.v1.QueryRequest ) returns ( .credit.v1.QueryResponse )" in (
        proc.stdout
    )


def test_generated_python_imports_the_package_path() -> None:
    generated = "\n".join(
        p.read_text() for p in (PROTOS / "credit" / "v1").iterdir() if "_pb2" in p.name
    )
    assert re.search(r"^\s*(from|import) credit\.v1", generated, re.M) is None
    assert "from protos.credit.v1 import common_pb2" in generated


@pytest.mark.parametrize(
    ("line", "want"),
    [
        (
            "from credit.v1 import common_pb2 as c\n",
            "from protos.credit.v1 import common_pb2 as c\n",
        ),
        ("    from credit.v1 import x\n", "    from protos.credit.v1 import x\n"),
        ("import credit.v1.common_pb2\n", "import protos.credit.v1.common_pb2\n"),
        # A proto full name is not a module path.
        ("_globals['credit.v1.QueryRequest'] = 1\n", "_globals['credit.v1.QueryRequest'] = 1\n"),
        ('"""credit.v1 docs"""\n', '"""credit.v1 docs"""\n'),
    ],
)
def test_import_rewrite_touches_only_imports(line: str, want: str) -> None:
    assert _package_imports(line) == want
