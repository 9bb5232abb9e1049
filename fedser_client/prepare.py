"""From a data dir to a `ClientData`: scan, extract (cached), split, normalise."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedser_client.core.data import UNLABELED, ClientData, split_train_eval, zscore
from fedser_client.core.trainer import stable_seed
from fedser_client.data.labels import DataListing, scan_data_dir
from fedser_client.features.base import ExtractorSpec
from fedser_client.features.pipeline import ExtractionProgress, FeatureTable, extract_features
from fedser_shared.config import RunConfig
from fedser_shared.errors import DataError
from fedser_shared.logging import get_logger

log = get_logger(__name__)


@dataclass
class PreparedData:
    data: ClientData
    train_paths: list[str]
    table: FeatureTable
    listing: DataListing


def prepare_client_data(
    data_dir: Path,
    config: RunConfig,
    cache_dir: Path,
    name: str,
    upstream_ckpt: Path | None = None,
    device: str = "cpu",
    progress: Callable[[ExtractionProgress], None] | None = None,
    workers: int = 1,
) -> PreparedData:
    """The same extraction step as `fedser-client extract` (warm cache: near-free), then split and normalise."""
    listing = scan_data_dir(data_dir, config.labels)
    if listing.n_labeled == 0 and not config.semi.enabled:
        raise DataError(f"no labeled audio under {data_dir}: labels.csv must give an emotion for at least one file")
    spec = ExtractorSpec(config.features.name, upstream_ckpt, device)
    table = extract_features(data_dir, listing, spec, cache_dir, workers, progress)
    train_idx, eval_idx = split_train_eval(table.labels, config.train.eval_fraction, stable_seed(config.federation.seed, name, "split"))
    features = table.features
    if config.features.normalisation == "client":
        features = zscore(features)
    hidden_of = {f.path.as_posix(): f.hidden for f in listing.files if f.hidden is not None}
    hidden = np.array([hidden_of.get(table.paths[i], UNLABELED) for i in train_idx], np.int64)
    data = ClientData(
        x_train=features[train_idx], y_train=table.labels[train_idx],
        x_eval=features[eval_idx], y_eval=table.labels[eval_idx], hidden_labels=hidden)
    log.info("client_data_ready", n_files=len(listing.files), n_train=len(train_idx), n_eval=len(eval_idx),
             n_labeled=int((data.y_train != UNLABELED).sum()), n_failed=len(table.failed), from_cache=table.from_cache,
             ignored_emotions=dict(listing.ignored_emotions), missing_files=len(listing.missing_files))
    return PreparedData(data, [table.paths[i] for i in train_idx], table, listing)


def label_counts(data: ClientData, num_classes: int) -> list[int]:
    return [int(c) for c in np.asarray(data.label_counts(num_classes))]
