"""Wire a client together: prepare data, build the trainer, run the daemon."""

from __future__ import annotations

import socket
from pathlib import Path

import grpc
import torch

from fedser_client.core.trainer import LocalTrainer, stable_seed
from fedser_client.local_store import LocalStore
from fedser_client.prepare import PreparedData, label_counts, prepare_client_data
from fedser_client.transport.daemon import ClientDaemon, ClientIdentity, TrainObserver
from fedser_shared.config import RunConfig
from fedser_shared.errors import ConfigError


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for, but torch sees no CUDA device")
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"--device must be auto, cpu or cuda, not '{device}'")
    return device


def default_name(data_dir: Path) -> str:
    return f"{socket.gethostname()}-{Path(data_dir).resolve().name}"


def build_daemon(
    server: str,
    data_dir: Path,
    local_config: RunConfig,
    name: str,
    device: str = "cpu",
    credentials: grpc.ChannelCredentials | None = None,
    token: str = "",
    upstream_ckpt: Path | None = None,
    connect_timeout_s: float = 600.0,
    observer: TrainObserver | None = None,
    prepared: PreparedData | None = None,
) -> ClientDaemon:
    store = LocalStore(data_dir)
    if prepared is None:
        prepared = prepare_client_data(data_dir, local_config, store.feature_cache_dir, name, upstream_ckpt, device)
    data = prepared.data
    identity = ClientIdentity(
        name=name, feature_name=local_config.features.name, feature_dim=data.feature_dim,
        label_counts=label_counts(data, local_config.num_classes), n_unlabeled=len(data.unlabeled_index),
        n_eval=len(data.y_eval), token=token)

    def make_trainer(run_config: RunConfig) -> LocalTrainer:
        return LocalTrainer(run_config, data, stable_seed(name), device)

    return ClientDaemon(server, identity, make_trainer, store, prepared.train_paths, credentials, connect_timeout_s, observer)
