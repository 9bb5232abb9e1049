"""Regenerate the committed protobuf/gRPC stubs in shared/fedser_shared/proto/.

Usage: python scripts/gen_proto.py [OUT_ROOT]   (default: shared/)
The proto root is mapped to the import path ``fedser_shared/proto`` so that the generated
modules import each other as ``fedser_shared.proto.fedser.v1``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from grpc_tools import protoc

REPO = Path(__file__).resolve().parents[1]
PROTO_ROOT = REPO / "proto"


def generate(out_root: Path) -> list[Path]:
    protos = sorted(PROTO_ROOT.rglob("*.proto"))
    out_root.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-Ifedser_shared/proto={PROTO_ROOT}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *(f"fedser_shared/proto/{p.relative_to(PROTO_ROOT)}" for p in protos),
    ]
    # protoc resolves the virtual path against -I, so pass the on-disk files via the mapping
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    generated = sorted((out_root / "fedser_shared" / "proto").rglob("*.py*"))
    for folder in {p.parent for p in generated}:
        package = folder
        while package != out_root / "fedser_shared":
            (package / "__init__.py").touch()
            package = package.parent
    return generated


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "shared"
    for path in generate(out):
        print(path.relative_to(out))
