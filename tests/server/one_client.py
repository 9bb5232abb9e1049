"""A live server (in this process, real gRPC on 127.0.0.1) with one joined client holding its first TRAIN task."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc

from fedser_server import app as server_app
from fedser_shared import PROTOCOL_VERSION
from fedser_shared.config import load_run_config
from fedser_shared.proto.fedser.v1 import coordinator_pb2 as pb
from fedser_shared.proto.fedser.v1 import coordinator_pb2_grpc as pb_grpc


@dataclass
class OneClientRound:
    server: server_app.RunningServer
    channel: grpc.Channel
    stub: pb_grpc.CoordinatorStub
    session: pb.Session
    task: pb.Task

    def close(self) -> None:
        self.channel.close()
        self.server.shutdown(grace_s=0.5)


def start_one_client_round(tmp_path: Path, **overrides: object) -> OneClientRound:
    """One round, one client, sampled: the task it polled is TRAIN. `overrides` are run-config keys."""
    config = load_run_config(None, {"federation.rounds": 1, "federation.min_clients": 1, "federation.fraction": 1.0,
                                    "federation.poll_timeout_s": 2.0, "federation.round_timeout_s": 60.0, **overrides})
    server = server_app.start(config, "127.0.0.1:0", tmp_path / "state")
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    stub = pb_grpc.CoordinatorStub(channel)
    reply = stub.Join(pb.JoinRequest(protocol_version=PROTOCOL_VERSION, name="raw", feature_name="emobase",
                                     feature_dim=988, label_counts=[5, 5, 5, 5], n_eval=0), timeout=10)
    task = stub.GetTask(pb.GetTaskRequest(protocol_version=PROTOCOL_VERSION, session=reply.session), timeout=10)
    assert task.kind == pb.TASK_KIND_TRAIN
    return OneClientRound(server, channel, stub, reply.session, task)
