"""`fedser-sim`: partition a corpus into clients and run a whole federation on this machine."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from fedser_shared.cli import entry_point, make_app
from fedser_shared.errors import ConfigError, FedserError

if TYPE_CHECKING:
    from rich.progress import Progress

    from fedser_shared.config import RunConfig

app = make_app("Run a whole federation on this machine from a corpus (manifest.csv: path,speaker,emotion).")


def _progress(console: Console) -> Progress:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("{task.fields[status]}"), console=console, transient=False)


@app.command()
def run(
    corpus: Annotated[Path, typer.Option("--corpus", help="corpus root holding manifest.csv")],
    out: Annotated[Path, typer.Option("--out", help="run directory (client dirs, server state, logs)")] = Path("runs/latest"),
    clients: Annotated[int, typer.Option("--clients", min=1)] = 8,
    rounds: Annotated[int | None, typer.Option("--rounds")] = None,
    engine: Annotated[str, typer.Option("--engine", help="grpc (server + client processes) | inprocess (one loop, for sweeps) | ray (clients as Ray actors)")] = "grpc",
    ray_address: Annotated[str | None, typer.Option("--ray-address", help="with --engine ray: an existing Ray cluster (default: start a local one)")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="run configuration (TOML)")] = None,
    algorithm: Annotated[str | None, typer.Option("--algorithm", help="fedavg | scaffold")] = None,
    semi: Annotated[bool | None, typer.Option("--semi/--no-semi", help="semi-supervised local training on the unlabeled audio (Semi-FedSER)")] = None,
    semi_method: Annotated[str | None, typer.Option("--semi-method", help="with --semi: mvpl (the paper's multiview pseudo-labels) | fixmatch | supervised (the same views, sampling and steps, no unlabeled term: the fair baseline)")] = None,
    feature: Annotated[str | None, typer.Option("--feature", help="emobase | egemaps | compare | apc | tera | decoar2 | distilhubert (default: the config's)")] = None,
    label_rate: Annotated[float | None, typer.Option("--label-rate", help="share of each client's files that keep their label, in (0, 1]; the others become unlabeled (seeded)")] = None,
    labeled_speakers: Annotated[int | None, typer.Option("--labeled-speakers", help="K training speakers (seeded) keep every label, all others none: the setting where unlabeled audio can matter; needs --semi")] = None,
    test_speakers: Annotated[int, typer.Option("--test-speakers", help="speakers who never join: the global model is scored on them, each normalised with its own statistics")] = 0,
    fraction: Annotated[float | None, typer.Option("--fraction")] = None,
    min_clients: Annotated[int | None, typer.Option("--min-clients")] = None,
    eval_every: Annotated[int | None, typer.Option("--eval-every")] = None,
    seed: Annotated[int | None, typer.Option("--seed")] = None,
    secure_aggregation: Annotated[str | None, typer.Option("--secure-aggregation", help="off | secagg+ (the server learns only each round's sum; docs/privacy.md)")] = None,
    dp_epsilon: Annotated[float | None, typer.Option("--dp-epsilon", help="differential privacy (DP-FedAvg): the epsilon the whole run may spend; the noise multiplier follows from the accountant (privacy.target_epsilon; the mode is privacy.dp, central unless the config says distributed)")] = None,
    workers: Annotated[int, typer.Option("--workers", help="processes for feature extraction (0 = all cores)")] = 0,
    feature_cache: Annotated[Path | None, typer.Option("--feature-cache", help="corpus feature cache (default ~/.cache/fedser)")] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="give up after this many seconds")] = 3600.0,
    log_level: Annotated[str, typer.Option("--log-level")] = "warning",
) -> None:
    """Partition the corpus by speaker into N clients, extract features once, run R rounds, print UAR."""
    # here, not at the top: torch, openSMILE and pydantic would slow `fedser-sim --help` to seconds
    import numpy as np

    from fedser_client.local_store import LocalStore
    from fedser_client.prepare import prepare_client_data
    from fedser_server.state.layout import read_stop_reason
    from fedser_shared.config import load_run_config, to_toml
    from fedser_shared.fsutil import atomic_write_text
    from fedser_shared.logging import configure_logging
    from fedser_sim import grpc_engine
    from fedser_sim.corpus import partition_by_speaker, read_manifest, write_client_dir
    from fedser_sim.display import print_summary
    from fedser_sim.features import default_cache_dir, extract_corpus, seed_client_cache
    from fedser_sim.held_out import HeldOutScorer, choose_test_speakers, held_out_set
    from fedser_sim.inprocess_engine import run_inprocess

    configure_logging(log_level)
    console = Console(stderr=False)
    if label_rate is not None and not 0.0 < label_rate <= 1.0:
        raise ConfigError(f"--label-rate must be in (0, 1], got {label_rate}")
    if labeled_speakers is not None and label_rate is not None:
        raise ConfigError("--labeled-speakers and --label-rate are two ways to hide labels: give one")
    if labeled_speakers is not None and labeled_speakers < 1:
        raise ConfigError(f"--labeled-speakers must be 1 or more, got {labeled_speakers}")
    if test_speakers < 0:
        raise ConfigError(f"--test-speakers must be 0 or more, got {test_speakers}")
    run_config = load_run_config(config, {
        "federation.rounds": rounds, "federation.algorithm": algorithm, "federation.fraction": fraction,
        "federation.min_clients": min_clients, "federation.eval_every": eval_every, "federation.seed": seed,
        "semi.enabled": semi, "semi.method": semi_method, "features.name": feature,
        "privacy.secure_aggregation": secure_aggregation,
        **_dp_overrides(config, dp_epsilon),
    })
    fed = run_config.federation
    if fed.min_clients > clients:
        raise ConfigError(f"'federation.min_clients' is {fed.min_clients} but only {clients} clients are simulated")
    if engine not in ("grpc", "inprocess", "ray"):
        raise ConfigError(f"--engine must be grpc, inprocess or ray, not '{engine}'")
    if run_config.privacy.secure and engine == "ray":
        raise ConfigError("secure aggregation runs with --engine grpc or inprocess; engine 'ray' does not support it yet")
    # every client joins before round 1, so the sample (and the result) does not depend on start-up order
    run_config = run_config.model_copy(update={"federation": fed.model_copy(update={"start_clients": clients})})

    utterances, ignored = read_manifest(corpus, run_config.labels)
    speakers = sorted({u.speaker for u in utterances})
    held_out = choose_test_speakers(speakers, test_speakers, fed.seed) if test_speakers else []
    if len(speakers) - len(held_out) < 1:
        raise ConfigError(f"--test-speakers {test_speakers} leaves no training speaker: the corpus has {len(speakers)}")
    training = [u for u in utterances if u.speaker not in held_out]
    keeping = None
    if labeled_speakers is not None:
        training_speakers = sorted({u.speaker for u in training})
        if labeled_speakers >= len(training_speakers):
            raise ConfigError(f"--labeled-speakers {labeled_speakers} leaves no label-free speaker: "
                              f"{len(training_speakers)} speakers train")
        keeping = choose_labeled_speakers(training_speakers, labeled_speakers, fed.seed)
    parts = [p for p in partition_by_speaker(training, clients, fed.seed) if p]
    if len(parts) < clients:
        raise ConfigError(f"{len(speakers) - len(held_out)} training speakers ({len(training)} utterances) "
                          f"cannot make {clients} clients; use fewer --clients or --test-speakers")
    out.mkdir(parents=True, exist_ok=True)
    hidden = [hidden_paths(part, label_rate, fed.seed, i) if keeping is None else
              {u.path for u in part if u.speaker not in keeping} for i, part in enumerate(parts)]
    client_dirs = [write_client_dir(corpus, part, out / "clients" / f"client{i:02d}", hide)
                   for i, (part, hide) in enumerate(zip(parts, hidden))]
    n_hidden = sum(len(h) for h in hidden)
    if n_hidden and not run_config.semi.enabled and any(len(h) == len(p) for h, p in zip(hidden, parts)):
        flag = "--label-rate" if keeping is None else "--labeled-speakers"
        raise ConfigError(f"{flag} leaves a client without labels; it can train only with --semi")
    config_path = out / "run.toml"
    atomic_write_text(config_path, to_toml(run_config))
    semi_text = f" + {run_config.semi.method}" if run_config.semi.enabled else ""
    held_out_text = f" + {len(held_out)} held-out speaker(s) ({', '.join(held_out)})" if held_out else ""
    if keeping is not None:
        held_out_text += f"; labels kept by {', '.join(sorted(keeping))} only"
    console.print(f"[bold]fedser-sim[/]: {len(utterances)} utterances, {len(speakers)} speakers → {clients} clients"
                  f"{held_out_text}; "
                  f"{len(training) - n_hidden} of {len(training)} training files labeled; "
                  f"{fed.rounds} rounds of {fed.algorithm}{semi_text}, engine {engine}; run dir {out}")
    if ignored:
        console.print(f"ignored {sum(ignored.values())} files whose emotion the label map does not name: "
                      + ", ".join(f"{emotion or '(empty)'} {n}" for emotion, n in sorted(ignored.items())))

    started = time.perf_counter()
    cache_dir = feature_cache or default_cache_dir(corpus)
    with _progress(console) as progress:
        bar = progress.add_task(f"features ({run_config.features.name})", total=len(utterances), status="")
        features = extract_corpus(corpus, [u.path for u in utterances], run_config.features.name, cache_dir,
                                  workers or os.cpu_count() or 1, lambda done, total: progress.update(bar, completed=done))
        for folder, part in zip(client_dirs, parts):
            LocalStore(folder).forget_training_state()  # a new federation: no c_i or pool from an earlier run
            seed_client_cache(features, [u.path for u in part], run_config.features.name, LocalStore(folder).feature_cache_dir)
        progress.update(bar, status=f"{len(features.failed)} unreadable" if features.failed else "done")

        rounds_bar = progress.add_task("rounds", total=fed.rounds, status="starting clients")

        scorer = None
        if held_out:
            readable = [u for u in utterances if u.speaker in held_out and u.path in features.vectors]
            by_speaker = {s: (np.stack([features.vectors[u.path] for u in readable if u.speaker == s]),
                              np.array([u.label for u in readable if u.speaker == s], np.int64)) for s in held_out}
            scorer = HeldOutScorer(run_config, held_out_set(by_speaker, run_config), out / "server")

        def show(metrics: list[dict[str, Any]]) -> None:
            if scorer is not None:
                scorer.follow(metrics)
            last_uar = next((m["uar"] for m in reversed(metrics) if m.get("uar") is not None), None)
            status = f"last UAR {last_uar:.3f}" if last_uar is not None else ("waiting for clients" if not metrics else "")
            if scorer is not None and scorer.scores:
                status += f", held-out {scorer.scores[max(scorer.scores)]:.3f}"
            progress.update(rounds_bar, completed=len(metrics), status=status)

        if engine == "grpc":
            federation = grpc_engine.launch(config_path, client_dirs, out, log_level="info")
            metrics = grpc_engine.watch(federation, fed.rounds, show, timeout)
        elif engine == "ray":
            from fedser_sim.ray_engine import run_ray

            metrics = run_ray(config_path, client_dirs, out, fed.rounds, show, timeout, ray_address)
        if engine in ("grpc", "ray") and (reason := read_stop_reason(out / "server")) is not None:
            console.print(f"run stopped: {reason}")
        else:
            prepared = {folder.name: prepare_client_data(folder, run_config, LocalStore(folder).feature_cache_dir, folder.name)
                        for folder in client_dirs}
            history: list[dict[str, Any]] = []
            progress.update(rounds_bar, status="")

            def on_round(record: dict[str, Any]) -> None:
                history.append(record)
                show(history)

            run_inprocess(run_config, prepared, out / "server", on_round,
                          on_stop=lambda reason: console.print(f"run stopped: {reason}"))
            metrics = history
    wall_s = time.perf_counter() - started
    final = scorer.final() if scorer is not None else None
    held_out_scores = scorer.scores if scorer is not None else {}
    atomic_write_text(out / "summary.json", json.dumps({
        "engine": engine, "wall_s": wall_s, "test_speakers": held_out,
        "held_out_uar": {str(r): v for r, v in sorted(held_out_scores.items())}, "rounds": metrics}, indent=1))
    print_summary(console, run_config, metrics, wall_s, engine, held_out_scores, final)
    report = _write_report(out / "server", run_config)
    if report is not None:
        console.print(f"report: {report}")


def _dp_overrides(config: Path | None, dp_epsilon: float | None) -> dict[str, object]:
    """--dp-epsilon E: privacy.target_epsilon = E, in the config's dp mode (central when it has none)."""
    from fedser_shared.config import load_run_config

    if dp_epsilon is None:
        return {}
    if dp_epsilon <= 0:
        raise ConfigError(f"--dp-epsilon must be positive, got {dp_epsilon}")
    mode = load_run_config(config).privacy.dp
    return {"privacy.dp": mode if mode != "off" else "central", "privacy.target_epsilon": dp_epsilon}


def hidden_paths(part: list[Any], label_rate: float | None, seed: int, index: int) -> set[str]:
    """The files of one client whose label is hidden (the same rule as benchmarks/accuracy.py)."""
    import numpy as np

    from fedser_client.core.data import UNLABELED
    from fedser_client.core.trainer import stable_seed
    from fedser_sim.labels import hide_labels

    if label_rate is None or label_rate >= 1.0:
        return set()
    labels = np.array([u.label for u in part], np.int64)
    kept = hide_labels(labels, label_rate, np.random.default_rng(stable_seed(seed, index, "labels")))
    return {u.path for u, k in zip(part, kept) if k == UNLABELED}


def choose_labeled_speakers(speakers: list[str], k: int, seed: int) -> set[str]:
    """The K speakers that keep their labels (the same rule as benchmarks/accuracy.py's spkK)."""
    import numpy as np

    from fedser_client.core.trainer import stable_seed
    from fedser_sim.labels import labeled_speakers

    return labeled_speakers(speakers, k, np.random.default_rng(stable_seed(seed, "speakers")))


def _write_report(state_dir: Path, config: RunConfig) -> Path | None:
    from fedser_server.observability.report import write_report
    from fedser_server.observability.snapshot import load_snapshot

    try:
        return write_report(load_snapshot(state_dir), state_dir / "report", list(config.labels.class_names)).html
    except FedserError as exc:
        Console(stderr=True).print(f"no report: {exc}")
        return None


main = entry_point(app, "fedser-sim")

if __name__ == "__main__":
    main()
