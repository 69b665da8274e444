"""Regenerate the committed Python code for the contracts in ``protos/``.

Run from the repository root with the pinned tools of the ``dev`` extra::

    python -m protos.generate          # rewrite the generated files
    python -m protos.generate --check  # exit 1 if the committed files differ

Protos are compiled with the repository root as the include path, so the
generated modules import each other as ``protos.credit.v1.*`` and the package
installs like any other.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "protos" / "credit" / "v1"
SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def _generate(out: Path) -> None:
    from grpc_tools import protoc  # only needed by whoever regenerates

    # protoc finds the mypy-protobuf plugins on PATH; they sit beside this Python.
    bindir = str(Path(sys.executable).parent)
    os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")

    protos = sorted(str(p.relative_to(ROOT)) for p in PROTO_DIR.glob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{ROOT}",
        f"-I{include}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


def _generated(base: Path) -> list[Path]:
    d = base / "protos" / "credit" / "v1"
    return sorted(p for p in d.iterdir() if p.name.endswith(SUFFIXES))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if committed code is stale")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        _generate(out)
        fresh = {p.name: p for p in _generated(out)}
        current = {p.name: p for p in _generated(ROOT)}
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
