"""Feature extraction speed on a real corpus: real-time factor per extractor and worker count, cold vs warm cache.

    python benchmarks/features.py [--corpus ../shared/data/nemo4] [--subset N] [--features emobase,egemaps,compare]
                                  [--workers 1,2] [--ssl-subset 40] [--ssl-workers 1] [--upstream-ckpt NAME=PATH ...]

For each extractor and worker count, a cold run extracts the files into a fresh cache (the
wall time includes starting the worker processes), then a warm run over the same files reads
the cache. Cold runs include loading the model (in each worker process, and once in the main
process to check it), shown apart as "model load s". Real-time factor = audio seconds / wall seconds; "per worker" divides by the
number of workers; "per core" divides audio seconds by the CPU seconds spent (this process
and its workers), which stays meaningful on a machine shared with other work. s3prl extractors run on --ssl-subset files; without --upstream-ckpt they
use a random-weight checkpoint of the published architecture (same compute, meaningless
vectors), built in a temp dir, since nothing can be downloaded here. The openSMILE sets
(emobase, egemaps, compare) run on the same files with the same worker counts, and each
one's per-core speed is also given as a ratio to emobase's in the same run.
Targets (issue 4): emobase >= 30x real time per core; warm >= 100x faster than cold.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command_line, headline, machine_facts, markdown_table, write_results  # noqa: E402

from fedser_client.data.labels import DataListing, scan_data_dir  # noqa: E402
from fedser_client.features.base import ExtractorSpec  # noqa: E402
from fedser_client.features.pipeline import FeatureTable, extract_features  # noqa: E402
from fedser_shared.config import FEATURE_DIMS, OPENSMILE_NAMES, LabelsConfig  # noqa: E402
from fedser_shared.errors import FedserError  # noqa: E402

EMOBASE_TARGET = 30.0
WARM_TARGET = 100.0


def random_checkpoint(name: str, folder: Path) -> Path:
    """A checkpoint with the published architecture of `name` and random weights."""
    import torch

    from fedser_client.features.torchaudio_compat import install

    install()
    torch.manual_seed(0)
    path = folder / f"{name}-random.ckpt"
    if name == "apc":  # apc_360hr: 3 GRU layers of 512 on 80 log-mel fbank
        from s3prl.upstream.apc.apc import APC

        paras = {"hidden_size": 512, "num_layers": 3, "dropout": 0.1, "residual": True}
        audio = {"feat_type": "fbank", "feat_dim": 80, "frame_length": 25, "frame_shift": 10, "dither": 0.0, "cmvn": True}
        torch.save({"config": {"data": {"audio": audio}, "model": {"paras": paras}}, "model": APC(80, **paras).state_dict()}, path)
    elif name == "tera":  # tera_960hr (logMelBase): 3 transformer layers of 768 on 80 log-mel
        from s3prl.upstream.mockingjay.model import TransformerConfig, TransformerModel

        feat = {"feat_type": "mel", "channel": 0, "log": True, "delta": 0, "cmvn": True}
        config = {
            "transformer": {"hidden_size": 768, "num_hidden_layers": 3, "num_attention_heads": 12, "hidden_act": "gelu",
                            "intermediate_size": 3072, "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
                            "initializer_range": 0.02, "layer_norm_eps": 1e-12, "share_layer": False,
                            "pre_layer_norm": False},
            "task": {"sequence_length": 0},
            "audio": {"target_level": -25, "win_ms": 25, "hop_ms": 10, "n_freq": 201, "n_mels": 80, "n_mfcc": 13,
                      "input": dict(feat), "target": dict(feat)},
        }
        model = TransformerModel(TransformerConfig(config["transformer"]), 80)
        torch.save({"Config": {}, "Upstream_Config": config, "Transformer": model.state_dict()}, path)
    elif name == "decoar2":  # the architecture is fixed in s3prl's code: 12 layers of 768
        from s3prl.upstream.decoar2.decoar2 import Decoar2

        torch.save({"model": Decoar2().state_dict()}, path)
    elif name == "distilhubert":  # distilhubert_ls960_4-8-12: HuBERT's CNN, 2 layers of 768, 3 prediction heads
        from s3prl.upstream.distiller.model import DistillerConfig, DistillerModel

        config = {"distiller": {"encoder_layers": 2, "encoder_embed_dim": 768, "encoder_ffn_embed_dim": 3072,
                                "encoder_attention_heads": 12, "n_tasks": 3, "pred_layer_id": [4, 8, 12],
                                "final_dim": 768, "layer_norm_first": False, "extractor_mode": "default"}}
        torch.save({"Config": config, "Distiller": DistillerModel(DistillerConfig(config["distiller"])).state_dict()}, path)
    else:
        raise ValueError(name)
    return path


def subset(listing: DataListing, n: int) -> DataListing:
    """Every k-th file, so that a subset spans all speakers and emotions."""
    if n <= 0 or n >= len(listing.files):
        return listing
    step = len(listing.files) / n
    return DataListing(files=[listing.files[int(i * step)] for i in range(n)])


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the worker processes)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _forget_checkpoint_hashes() -> None:
    """Each run pays for hashing the checkpoint, as a fresh `fedser-client` process would."""
    if "fedser_client.features.ssl" in sys.modules:
        sys.modules["fedser_client.features.ssl"]._sha256_of.cache_clear()


def model_load_seconds(spec: ExtractorSpec) -> float:
    _forget_checkpoint_hashes()
    started = time.perf_counter()
    spec.build()
    return time.perf_counter() - started


def timed(corpus: Path, listing: DataListing, spec: ExtractorSpec, cache: Path, workers: int) -> tuple[FeatureTable, float, float]:
    _forget_checkpoint_hashes()
    started, cpu = time.perf_counter(), _cpu_seconds()
    table = extract_features(corpus, listing, spec, cache, workers)
    return table, time.perf_counter() - started, _cpu_seconds() - cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=Path("../shared/data/nemo4"))
    parser.add_argument("--subset", type=int, default=0, help="files to use for the openSMILE sets (0 = all)")
    parser.add_argument("--ssl-subset", type=int, default=40, help="files to use for each s3prl extractor")
    parser.add_argument("--features", default="emobase,egemaps,compare",
                        help=f"comma-separated, from: {','.join(FEATURE_DIMS)}")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts for the openSMILE sets")
    parser.add_argument("--ssl-workers", default="1", help="comma-separated worker counts for s3prl extractors")
    parser.add_argument("--upstream-ckpt", action="append", default=[], metavar="NAME=PATH",
                        help="a real s3prl checkpoint for NAME (default: random weights, same architecture)")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results)")
    args = parser.parse_args()

    features = [f.strip() for f in args.features.split(",") if f.strip()]
    worker_counts = {"opensmile": [int(w) for w in args.workers.split(",")],
                     "ssl": [int(w) for w in args.ssl_workers.split(",")]}
    unknown = [f for f in features if f not in FEATURE_DIMS]
    if unknown:
        parser.error(f"unknown features {unknown}; known: {', '.join(FEATURE_DIMS)}")
    ckpts = dict(item.split("=", 1) for item in args.upstream_ckpt)
    try:
        full = scan_data_dir(args.corpus, LabelsConfig())
    except FedserError as exc:
        parser.error(str(exc))
    facts = machine_facts()
    rows, notes = [], []
    worst_emobase, worst_warm = float("inf"), float("inf")
    per_core_of: dict[tuple[str, int], float] = {}
    with tempfile.TemporaryDirectory(prefix="fedser-bench-features-") as tmp:
        for name in features:
            opensmile = name in OPENSMILE_NAMES
            listing = subset(full, args.subset if opensmile else args.ssl_subset)
            ckpt = None
            if not opensmile:
                ckpt = Path(ckpts[name]) if name in ckpts else random_checkpoint(name, Path(tmp))
                if name not in ckpts:
                    notes.append(f"{name}: random weights, published architecture")
            spec = ExtractorSpec(name, ckpt)
            load_s = model_load_seconds(spec)
            for workers in worker_counts["opensmile" if opensmile else "ssl"]:
                cache = Path(tmp) / f"cache-{name}-{workers}"
                cold, cold_s, cold_cpu = timed(args.corpus, listing, spec, cache, workers)
                warm, warm_s, _ = timed(args.corpus, listing, spec, cache, workers)
                assert warm.extracted == 0 and warm.from_cache == cold.extracted
                rtf = cold.audio_seconds / cold_s
                per_core = cold.audio_seconds / cold_cpu
                ratio = cold_s / warm_s
                per_core_of[name, workers] = per_core
                baseline = per_core_of.get(("emobase", workers))
                rows.append([name, FEATURE_DIMS[name], workers, len(listing.files), f"{cold.audio_seconds:,.0f}", f"{load_s:.1f}",
                             f"{cold_s:.1f}", f"{rtf:.1f}×", f"{rtf / workers:.1f}×", f"{per_core:.1f}×",
                             f"{per_core / baseline:.2f}" if baseline and opensmile else "",
                             f"{warm_s:.2f}", f"{ratio:,.0f}×", len(cold.failed)])
                print(" | ".join(str(c) for c in rows[-1]), flush=True)
                if opensmile or not any(f in OPENSMILE_NAMES for f in features):  # the cache target: the full-corpus rows
                    worst_warm = min(worst_warm, ratio)
                if name == "emobase":
                    worst_emobase = min(worst_emobase, per_core)

    header = ["extractor", "dim", "workers", "files", "audio s", "model load s", "cold wall s", "real time (wall)",
              "per worker (wall)", "per core (CPU time)", "per core / emobase's", "warm wall s", "cold / warm", "skipped"]
    table = markdown_table(header, rows)
    print(table)
    verdict = []
    if worst_emobase != float("inf"):
        verdict.append(f"emobase per core (audio s / CPU s): {worst_emobase:.1f}× real time (target >= {EMOBASE_TARGET:.0f}×): "
                       + ("met" if worst_emobase >= EMOBASE_TARGET else "NOT met"))
    for (name, workers), per_core in per_core_of.items():
        baseline = per_core_of.get(("emobase", workers))
        if name in OPENSMILE_NAMES and name != "emobase" and baseline:
            verdict.append(f"{name} with {workers} worker(s): {per_core:.1f}× real time per core, "
                           f"{per_core / baseline:.2f} of emobase's {baseline:.1f}× on the same files in this run")
    opensmile_rows = any(f in OPENSMILE_NAMES for f in features)
    verdict.append(f"warm cache ({'openSMILE' if opensmile_rows else 'all'} rows): {worst_warm:,.0f}× faster "
                   f"than cold (target >= {WARM_TARGET:.0f}×): "
                   + ("met" if worst_warm >= WARM_TARGET else "NOT met"))
    if any(name not in OPENSMILE_NAMES for name in features):
        verdict.append("s3prl rows: a small subset on CPU; cold time includes loading the model and the warm time is mostly hashing "
                       "the checkpoint; their real-time factors are CPU figures, not GPU ones")
    body = table + "\n\n" + "\n".join(f"- {line}" for line in verdict + notes) + "\n"
    facts["corpus"] = f"{args.corpus} ({len(full.files)} files)"
    path = write_results("features", "Feature extraction: real-time factor and cache", command_line(), facts, body, args.out)
    print("\n".join(verdict))
    print(f"wrote {path}")
    headline("emobase_rtf_per_core" if worst_emobase != float("inf") else "warm_speedup",
             worst_emobase if worst_emobase != float("inf") else worst_warm)
    return 0


if __name__ == "__main__":
    sys.exit(main())
