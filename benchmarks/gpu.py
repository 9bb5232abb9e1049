"""Local training and s3prl extraction on CUDA vs CPU: the same work, timed on each device in one run.

Training is one client participation (`LocalTrainer.train`: SCAFFOLD correction, multiview
pseudo-labeling and stochastic feature augmentation switched on) on synthetic features shaped
like nemo4's; extraction runs the s3prl upstreams, with their published architectures and random
weights (nothing is downloaded), over synthetic waveforms as long as nemo4's clips on average.
The GPU's name and the CPU's thread count go into the results file beside the table.

    python benchmarks/gpu.py                  # needs a CUDA device; writes benchmarks/results/gpu.md
    python benchmarks/gpu.py --quick          # < 1 minute on a GPU machine
    python benchmarks/gpu.py --devices cpu    # no GPU: the CPU column only (the CI smoke test)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command_line, headline, machine_facts, markdown_table, write_results  # noqa: E402

from fedser_client.core.data import UNLABELED, ClientData  # noqa: E402
from fedser_client.core.state import LocalState  # noqa: E402
from fedser_client.core.trainer import CONTROL_PREFIX, LocalTrainer, TrainTask  # noqa: E402
from fedser_shared.config import load_run_config  # noqa: E402
from fedser_shared.model import WEIGHT_PREFIX, build_model, weights_of  # noqa: E402

CLASSES = 4
NEMO4_MEAN_CLIP_S = 2.47  # 7,585 s of audio over 3,076 clips


@dataclass(frozen=True)
class TrainCase:
    name: str
    feature_dim: int
    n_train: int
    hidden: list[int]
    batch_size: int
    local_epochs: int


TRAIN_CASES = [
    # one nemo4 client of eight (≈300 training clips), the default model and batch
    TrainCase("client shard, emobase, default MLP", 988, 300, [256, 128], 16, 5),
    TrainCase("client shard, ssl 768-dim, default MLP", 768, 300, [256, 128], 16, 5),
    # the whole corpus on one device (the centralized baseline)
    TrainCase("whole corpus, emobase, default MLP", 988, 2460, [256, 128], 16, 1),
    TrainCase("whole corpus, emobase, 1024x1024 MLP, batch 256", 988, 2460, [1024, 1024], 256, 20),
]
QUICK_TRAIN_CASES = [TrainCase("client shard, emobase, default MLP", 988, 300, [256, 128], 16, 2)]


def client_data(case: TrainCase, seed: int = 0) -> ClientData:
    """Class-separable synthetic features, 40 % of the training rows labeled (DESIGN §6's setting)."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, CLASSES, case.n_train + 80)
    x = (rng.normal(size=(len(truth), case.feature_dim)) + 0.3 * truth[:, None]).astype(np.float32)
    y_train = truth[: case.n_train].copy()
    y_train[rng.random(case.n_train) >= 0.4] = UNLABELED
    return ClientData(x[: case.n_train], y_train, x[case.n_train:], truth[case.n_train:],
                      hidden_labels=truth[: case.n_train].astype(np.int64))


def time_training(case: TrainCase, device: str, repeats: int) -> float:
    """Median seconds of one participation (the second one, so pseudo-labeling runs), after a warm-up."""
    config = load_run_config(None, {"model.hidden": case.hidden, "train.batch_size": case.batch_size,
                                    "semi.enabled": True, "federation.algorithm": "scaffold"})
    data = client_data(case)
    weights = weights_of(build_model(case.feature_dim, CLASSES, case.hidden, config.model.dropout, seed=0))
    control = {CONTROL_PREFIX + name[len(WEIGHT_PREFIX):]: np.zeros_like(v) for name, v in weights.items()}
    trainer = LocalTrainer(config, data, client_seed=1, device=device)
    task = TrainTask(round=2, lr=0.05, local_epochs=case.local_epochs, pseudo_threshold=0.3)
    state = LocalState(participations=1)
    times = []
    for _ in range(repeats + 1):
        started = time.perf_counter()
        trainer.train({**weights, **control}, task, state)  # returns numpy arrays: the device has finished
        times.append(time.perf_counter() - started)
    return statistics.median(times[1:])


def time_extraction(name: str, ckpt: Path, device: str, waveforms: list[np.ndarray]) -> float:
    """Seconds of audio extracted per wall-clock second, after one warm-up file."""
    from fedser_client.features.ssl import S3prlExtractor

    extractor = S3prlExtractor(name, ckpt, device)
    extractor.extract(waveforms[0])
    started = time.perf_counter()
    for wav in waveforms:
        extractor.extract(wav)
    return sum(len(w) for w in waveforms) / 16_000 / (time.perf_counter() - started)


def synthetic_waveforms(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.normal(NEMO4_MEAN_CLIP_S, 0.8, n), 1.0, 6.0)
    return [(0.1 * rng.normal(size=int(s * 16_000))).astype(np.float32) for s in lengths]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one training case, apc only, few files")
    parser.add_argument("--devices", default="cpu,cuda", help="comma-separated: cpu, cuda")
    parser.add_argument("--features", default="apc,tera,decoar2,distilhubert", help="s3prl upstreams to time")
    parser.add_argument("--files", type=int, default=60, help="synthetic clips per upstream and device")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results)")
    args = parser.parse_args()

    devices = [d.strip() for d in args.devices.split(",") if d.strip()]
    if unknown := set(devices) - {"cpu", "cuda"}:
        print(f"error: --devices takes cpu and cuda, not {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    if "cuda" in devices and not torch.cuda.is_available():
        print("error: no CUDA device (torch.cuda.is_available() is False); run with --devices cpu", file=sys.stderr)
        return 2
    features = ["apc"] if args.quick else [f.strip() for f in args.features.split(",") if f.strip()]
    files = min(args.files, 8) if args.quick else args.files
    repeats = 1 if args.quick else args.repeats
    cases = QUICK_TRAIN_CASES if args.quick else TRAIN_CASES

    facts = machine_facts()
    facts["torch"] = torch.__version__
    facts["cpu threads (torch)"] = str(torch.get_num_threads())
    if "cuda" in devices:
        props = torch.cuda.get_device_properties(0)
        facts["gpu"] = f"{props.name}, {props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}"

    both = len(devices) == 2

    def cells(values: dict[str, float], digits: int, cuda_speedup: float) -> list[str]:
        return [f"{values[d]:.{digits}f}" for d in devices] + ([f"{cuda_speedup:.2f}"] if both else [])

    train_rows = []
    for case in cases:
        seconds = {d: time_training(case, d, repeats) for d in devices}
        print(f"train  {case.name}: " + ", ".join(f"{d} {s:.3f} s" for d, s in seconds.items()), flush=True)
        speedup = seconds["cpu"] / seconds["cuda"] if both else 0.0
        train_rows.append([case.name, case.n_train, case.batch_size, case.local_epochs, *cells(seconds, 3, speedup)])

    extract_rows, rates = [], []
    waveforms = synthetic_waveforms(files)
    with tempfile.TemporaryDirectory(prefix="fedser-gpu-bench-") as tmp:
        from features import random_checkpoint

        for name in features:
            ckpt = random_checkpoint(name, Path(tmp))
            rate = {d: time_extraction(name, ckpt, d, waveforms) for d in devices}
            print(f"extract {name}: " + ", ".join(f"{d} {r:.1f}x real time" for d, r in rate.items()), flush=True)
            rates.append(rate)
            extract_rows.append([name, files, *cells(rate, 1, rate["cuda"] / rate["cpu"] if both else 0.0)])

    body = "\n".join([
        "## Local training: seconds per participation (median of repeats after a warm-up)", "",
        ("SCAFFOLD correction, MvPL (second participation) and SFA on; 40 % of training rows labeled; synthetic "
         "features; 4 classes."), "",
        markdown_table(["case", "train rows", "batch", "local epochs", *[f"{d} s" for d in devices],
                        *(["cpu/cuda time"] if both else [])], train_rows),
        "", "## s3prl extraction: seconds of audio per wall-clock second", "",
        (f"{files} synthetic clips of {NEMO4_MEAN_CLIP_S} s on average (nemo4's mean), one at a time as the client "
         "extracts them; published architectures with random weights."), "",
        markdown_table(["upstream", "clips", *[f"{d} x real time" for d in devices],
                        *(["cuda/cpu speed"] if both else [])], extract_rows),
    ])
    path = write_results("gpu_quick" if args.quick else "gpu", "Training and s3prl extraction: CUDA vs CPU",
                         command_line(), facts, body, args.out)
    print(f"results: {path}")
    if both:
        headline("cuda/cpu s3prl extraction speed", statistics.median(r["cuda"] / r["cpu"] for r in rates))
    else:
        headline(f"{devices[0]} s3prl extraction x real time", statistics.median(r[devices[0]] for r in rates))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
