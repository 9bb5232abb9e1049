"""The committed protobuf/gRPC stubs must be exactly what the .proto files generate."""

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(importlib.util.find_spec("grpc_tools") is None, reason="grpcio-tools (dev extra) not installed")
def test_committed_stubs_are_up_to_date(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        from gen_proto import generate
    finally:
        sys.path.pop(0)
    generated = generate(tmp_path)
    assert generated, "no stubs were generated"
    for path in generated:
        rel = path.relative_to(tmp_path)
        committed = REPO / "shared" / rel
        assert committed.exists(), f"{rel} is not committed: run python scripts/gen_proto.py"
        assert committed.read_bytes() == path.read_bytes(), f"{rel} is stale: run python scripts/gen_proto.py"
