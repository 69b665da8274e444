"""Regenerate the committed Python code for the contracts in ``protos/``.

Run from the repository root with the pinned tools of the ``dev`` extra::

    python -m protos.generate          # rewrite the generated files
    python -m protos.generate --check  # exit 1 if the committed files differ

The proto root is ``protos/``: the files import each other as ``credit/v1/common.proto``,
so any client compiles them with ``protoc -I protos`` or ``grpcurl -import-path protos``.
protoc then writes ``credit/v1/*_pb2.py`` importing ``credit.v1``; the generated Python lives
in the ``protos`` package, so each generated ``from credit.v1 import`` (and ``import
credit.v1``) is rewritten to ``protos.credit.v1`` (:func:`_package_imports`), and the
package installs like any other.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
PROTO_DIR = PROTO_ROOT / "credit" / "v1"
SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def _generate(out: Path) -> None:
    from grpc_tools import protoc  # only needed by whoever regenerates

    # protoc finds the mypy-protobuf plugins on PATH; they sit beside this Python.
    bindir = str(Path(sys.executable).parent)
    os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")

    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_DIR.glob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for path in (out / "credit" / "v1").iterdir():
        if path.name.endswith(SUFFIXES):
            path.write_text(_package_imports(path.read_text(encoding="utf-8")), encoding="utf-8")


# Only statements and dotted references that start with the proto package's module path;
# "credit.v1" inside a proto full name ("credit.v1.QueryService") is preceded by a quote or
# a letter and stays as it is.
_IMPORT = re.compile(r"^(\s*)(from|import) credit\.v1([. ])", re.MULTILINE)


def _package_imports(text: str) -> str:
    """Generated code imports ``credit.v1.*``; it lives at ``protos.credit.v1.*``."""
    return _IMPORT.sub(r"\1\2 protos.credit.v1\3", text)


def _generated(base: Path) -> list[Path]:
    return sorted(p for p in base.iterdir() if p.name.endswith(SUFFIXES))


def main(argv: list[str] | None = None) -> int:
    """Regenerate the committed stubs, or with ``--check`` compare them with fresh ones.

    ``argv`` is the argument list without the program name (``None``: ``sys.argv[1:]``).
    Returns the exit status: 0, or 1 under ``--check`` when a generated file differs, is
    missing or is left over. Raises ``SystemExit`` when protoc itself fails.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if committed code is stale")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        _generate(out)
        fresh = {p.name: p for p in _generated(out / "credit" / "v1")}
        current = {p.name: p for p in _generated(PROTO_DIR)}
        if args.check:
            stale = sorted(
                name
                for name in fresh.keys() | current.keys()
                if name not in fresh
                or name not in current
                or not filecmp.cmp(fresh[name], current[name], shallow=False)
            )
            if stale:
                print("generated code is stale: " + ", ".join(stale), file=sys.stderr)
                print("run: python -m protos.generate", file=sys.stderr)
                return 1
            print(f"generated code is current ({len(fresh)} files)")
            return 0
        for name in current.keys() - fresh.keys():
            current[name].unlink()
        for name, path in fresh.items():
            shutil.copyfile(path, PROTO_DIR / name)
        print(f"wrote {len(fresh)} files to {PROTO_DIR.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
