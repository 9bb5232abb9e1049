"""Enrolment tokens (hashed at rest) and session credentials bound to one client."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest

from fedser_server.security.enrolment import enrolment_policy
from fedser_server.security.tokens import TokenStore
from fedser_shared.cli import run_cli
from fedser_shared.errors import ConfigError
from fedser_shared.proto.fedser.v1 import coordinator_pb2 as pb
from tests.faults import raw
from tests.manual_clock import ManualClock

pytestmark = pytest.mark.timeout(120)


def test_tokens_are_stored_only_as_hashes_and_can_be_revoked(tmp_path: Path) -> None:
    store = TokenStore.in_state_dir(tmp_path)
    token = store.add("alice")
    text = (tmp_path / "tokens.json").read_text()
    assert token not in text and token[8:30] not in text
    assert (tmp_path / "tokens.json").stat().st_mode & 0o077 == 0
    assert store.verify(token) == "alice"
    assert store.verify(token + "x") is None and store.verify("") is None
    # a second store (another process: `fedser-server token revoke`) changes what the first one accepts
    assert TokenStore.in_state_dir(tmp_path).revoke("alice")
    assert store.verify(token) is None


def test_token_add_prints_the_token_once(tmp_path: Path, capsys) -> None:
    from fedser_server.cli import app

    assert run_cli(app, "fedser-server", ["token", "add", "bob", "--state-dir", str(tmp_path)]) == 0
    token = capsys.readouterr().out.strip()
    assert TokenStore.in_state_dir(tmp_path).verify(token) == "bob"
    assert run_cli(app, "fedser-server", ["token", "add", "bad name!", "--state-dir", str(tmp_path)]) == 2
    assert "client name" in capsys.readouterr().err


def test_enrolment_policy_is_closed_unless_asked_to_be_open(tmp_path: Path) -> None:
    store = TokenStore.in_state_dir(tmp_path)
    with pytest.raises(ConfigError, match="token add"):
        enrolment_policy(store, open_enrolment=False, insecure=False)
    assert enrolment_policy(store, open_enrolment=True, insecure=False) is None
    assert enrolment_policy(store, open_enrolment=False, insecure=True) is None
    store.add("alice")
    assert enrolment_policy(store, open_enrolment=False, insecure=True) is store
    with pytest.raises(ConfigError, match="ignore"):
        enrolment_policy(store, open_enrolment=True, insecure=False)


@pytest.fixture
def token_server(tmp_path: Path):
    tokens = TokenStore(tmp_path / "tokens.json")
    alice = tokens.add("alice")
    server = raw.start(tmp_path, tokens=tokens, **{"federation.min_clients": 2})
    channel, stub = raw.stub_for(server.port)
    yield server, stub, tokens, alice
    channel.close()
    server.shutdown(grace_s=0.2)


def test_join_needs_a_valid_token_and_the_token_names_the_client(token_server) -> None:
    server, stub, tokens, alice = token_server
    for token in ["", "fedser_guess", alice[:-1]]:
        code, details = raw.code_of(lambda t=token: raw.join(stub, "alice", token=t))
        assert code == grpc.StatusCode.UNAUTHENTICATED and "token" in details
    assert not server.coordinator.registry.clients
    reply = raw.join(stub, "whatever-the-device-calls-itself", token=alice)
    assert server.coordinator.registry.clients[reply.session.client_id].name == "alice"
    # a token added while the server runs is honoured at once
    bob = tokens.add("bob")
    assert server.coordinator.registry.clients[raw.join(stub, "b", token=bob).session.client_id].name == "bob"
    assert tokens.revoke("bob")
    assert raw.code_of(lambda: raw.join(stub, "b", token=bob))[0] == grpc.StatusCode.UNAUTHENTICATED


def test_a_session_works_only_for_its_own_client(token_server) -> None:
    server, stub, tokens, alice = token_server
    a = raw.join(stub, "a", token=alice).session
    b = raw.join(stub, "b", token=tokens.add("bob")).session
    task = raw.wait_task(stub, a)
    state = raw.fetch(stub, a, task)
    before = raw.snapshot(server)
    # alice's credential with bob's id, and bob's id with a guessed credential
    for forged in [pb.Session(client_id=b.client_id, session_token=a.session_token),
                   pb.Session(client_id=b.client_id, session_token="x" * 43)]:
        code, _ = raw.code_of(lambda s=forged: raw.submit(stub, raw.update_messages(s, task, raw.update_for(state))))
        assert code == grpc.StatusCode.PERMISSION_DENIED
        code, _ = raw.code_of(lambda s=forged: stub.Heartbeat(pb.HeartbeatRequest(protocol_version=raw.V, session=s), timeout=5))
        assert code == grpc.StatusCode.PERMISSION_DENIED
    # bob holds a valid session but alice's task: neither her model fetch nor her update is his
    code, _ = raw.code_of(lambda: raw.fetch(stub, b, task))
    assert code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.FAILED_PRECONDITION)
    code, _ = raw.code_of(lambda: raw.submit(stub, raw.update_messages(b, task, raw.update_for(state))))
    assert code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.FAILED_PRECONDITION)
    # alice cannot take over bob's registry record by rejoining under his id: she joins as herself
    assert raw.snapshot(server) == before
    rejoined = raw.join(stub, "a", token=alice, client_id=b.client_id).session
    assert rejoined.client_id == a.client_id != b.client_id
    assert server.coordinator.refusals["unknown_client"] >= 2


def test_an_expired_session_is_unauthenticated_and_rejoining_keeps_the_id(tmp_path: Path) -> None:
    clock = ManualClock()
    server = raw.start(tmp_path, clock=clock, **{"server.client_timeout_s": 60.0})
    channel, stub = raw.stub_for(server.port)
    try:
        first = raw.join(stub, "sleepy").session
        clock.advance(61.0)  # silent for longer than the client timeout: the server counts it as dead
        assert not server.coordinator.alive_clients()
        code, details = raw.code_of(lambda: stub.GetTask(pb.GetTaskRequest(protocol_version=raw.V, session=first), timeout=5))
        assert code == grpc.StatusCode.UNAUTHENTICATED and "expired" in details
        again = raw.join(stub, "sleepy", client_id=first.client_id).session
        assert again.client_id == first.client_id and again.session_token != first.session_token
        assert len(server.coordinator.registry.clients) == 1
        # the old credential stays dead
        code, _ = raw.code_of(lambda: stub.Heartbeat(pb.HeartbeatRequest(protocol_version=raw.V, session=first), timeout=5))
        assert code == grpc.StatusCode.PERMISSION_DENIED
        stub.Heartbeat(pb.HeartbeatRequest(protocol_version=raw.V, session=again), timeout=5)
    finally:
        channel.close()
        server.shutdown(grace_s=0.2)


def test_session_credentials_never_reach_the_disk(tmp_path: Path) -> None:
    server = raw.start(tmp_path)
    channel, stub = raw.stub_for(server.port)
    try:
        session = raw.join(stub, "disk").session
    finally:
        channel.close()
        server.shutdown(grace_s=0.2)
    for path in (tmp_path / "state").iterdir():
        assert session.session_token.encode() not in path.read_bytes(), path
    assert json.loads((tmp_path / "state" / "run_config.json").read_text())["federation"]["rounds"] == 1
