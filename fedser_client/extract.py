"""The extraction step with a face: scan a data dir, extract (cached) with a progress bar, print a summary.

`fedser-client extract` runs it alone; `fedser-client join` runs it before joining.
"""

from __future__ import annotations

import os
from pathlib import Path

from rich.console import Console

from fedser_client.data.labels import DataListing, scan_data_dir
from fedser_client.features.base import ExtractorSpec
from fedser_client.features.display import ExtractionBar, skipped_table, summary_table
from fedser_client.features.pipeline import FeatureTable, extract_features
from fedser_client.local_store import LocalStore
from fedser_client.prepare import PreparedData, prepare_client_data
from fedser_shared.config import RunConfig


def resolve_workers(workers: int) -> int:
    return workers if workers > 0 else (os.cpu_count() or 1)


def extract_with_progress(
    data_dir: Path, config: RunConfig, upstream_ckpt: Path | None = None, device: str = "cpu", workers: int = 0,
    console: Console | None = None,
) -> tuple[DataListing, FeatureTable]:
    console = console or Console(stderr=True)
    listing = scan_data_dir(data_dir, config.labels)
    spec = ExtractorSpec(config.features.name, upstream_ckpt, device)
    spec.identity()  # a missing checkpoint fails here, before any bar is drawn
    with ExtractionBar(console, f"{spec.name} features") as bar:
        table = extract_features(data_dir, listing, spec, LocalStore(data_dir).feature_cache_dir,
                                 resolve_workers(workers), bar)
    print_summary(console, listing, table, config)
    return listing, table


def prepare_with_progress(
    data_dir: Path, config: RunConfig, name: str, upstream_ckpt: Path | None = None, device: str = "cpu",
    workers: int = 0, console: Console | None = None,
) -> PreparedData:
    """`prepare_client_data` (what `join` trains on) with the same bar and summary as `extract`."""
    console = console or Console(stderr=True)
    with ExtractionBar(console, f"{config.features.name} features") as bar:
        prepared = prepare_client_data(data_dir, config, LocalStore(data_dir).feature_cache_dir, name, upstream_ckpt,
                                       device, bar, resolve_workers(workers))
    print_summary(console, prepared.listing, prepared.table, config)
    return prepared


def print_summary(console: Console, listing: DataListing, table: FeatureTable, config: RunConfig) -> None:
    console.print(summary_table(listing, table, config.labels.class_names))
    skipped = skipped_table(table)
    if skipped is not None:
        console.print(skipped)
