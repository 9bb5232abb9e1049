"""A small federation for fault tests: the server as a process (so that it can be killed -9 or
cut off by a proxy), the clients as daemons in the test's process (so that a test can hold one at
a chosen step through an event, instead of racing the clock)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from fedser_client.app import build_daemon
from fedser_client.local_store import LocalStore
from fedser_client.transport.daemon import ClientDaemon, DaemonResult
from fedser_shared.config import RunConfig, to_toml
from tests.faults import raw

# full participation and a deterministic trainer: a run that faults did not change ends on the same model
SETTINGS = {"federation.rounds": 4, "federation.min_clients": 3, "federation.eval_every": 2}


def config(**overrides: object) -> RunConfig:
    return raw.small_config(**{**SETTINGS, **overrides})


def serve_command(port: int, state_dir: Path, run_toml: Path | None, crashpoint: tuple[str, int] | None = None) -> list[str]:
    prefix = ["-m", "tests.faults.crashpoint", crashpoint[0], str(crashpoint[1])] if crashpoint else ["-m", "fedser_server.cli"]
    args = [*prefix, "serve", "--insecure", "--address", f"127.0.0.1:{port}", "--state-dir", str(state_dir)]
    return [*args, "--config", str(run_toml)] if run_toml is not None else [*args, "--resume"]


def write_config(tmp: Path, run_config: RunConfig) -> Path:
    path = tmp / "run.toml"
    path.write_text(to_toml(run_config))
    return path


@dataclass
class Hold:
    """Stop every client at one step of one round until released: `kind` is "upload" (trained,
    update not yet sent) or "evaluation" (evaluated, report not yet sent)."""

    kind: str
    round: int
    clients: tuple[int, ...] = (0, 1, 2)
    reached: dict[int, threading.Event] = field(default_factory=dict)
    release: threading.Event = field(default_factory=threading.Event)

    def all_reached(self) -> bool:
        return all(self.reached[i].is_set() for i in self.clients)


class Clients:
    """Client daemons on threads; `start(i)` runs client i. Each begins from a clean training state
    (its feature cache kept), as a device joining a new federation would."""

    def __init__(self, target: str, dirs: list[Path], run_config: RunConfig, hold: Hold | None = None,
                 connect_timeout_s: float = 120.0, after_update: Callable[[int, int], None] | None = None) -> None:
        """`after_update(client, round)` runs on the client's thread once the server took its update
        and the client saved its local state."""
        self.daemons: list[ClientDaemon] = []
        self.results: dict[int, DaemonResult] = {}
        self.errors: dict[int, BaseException] = {}
        self.threads: dict[int, threading.Thread] = {}
        self.accepted: list[tuple[int, int]] = []  # (client, round) of each update the server took
        for i, folder in enumerate(dirs):
            LocalStore(folder).forget_training_state()

            def observe(round_index: int, *_rest: object, _i: int = i) -> None:
                self.accepted.append((_i, round_index))
                if after_update is not None:
                    after_update(_i, round_index)

            daemon = build_daemon(target, folder, run_config, f"client{i}", connect_timeout_s=connect_timeout_s, observer=observe)
            if hold is not None and i in hold.clients:
                hold.reached[i] = threading.Event()
                _install_hold(daemon, hold, hold.reached[i])
            self.daemons.append(daemon)

    def start(self, *indices: int) -> None:
        for i in indices or range(len(self.daemons)):
            thread = threading.Thread(target=self._run, args=(i,), name=f"client{i}", daemon=True)
            self.threads[i] = thread
            thread.start()

    def _run(self, i: int) -> None:
        try:
            self.results[i] = self.daemons[i].run()
        except BaseException as exc:  # noqa: BLE001 - the test asserts on it
            self.errors[i] = exc

    def join(self, timeout_s: float = 60.0) -> None:
        for thread in self.threads.values():
            thread.join(timeout_s)

    def stop(self) -> None:
        for daemon in self.daemons:
            daemon.stop()

    def all_shut_down(self) -> bool:
        return len(self.results) == len(self.daemons) and all(r.shutdown for r in self.results.values())


def _install_hold(daemon: ClientDaemon, hold: Hold, reached: threading.Event) -> None:
    def held(method: Callable[..., object]) -> Callable[..., object]:
        def call(received_or_task: object, *args: object) -> object:
            task = getattr(received_or_task, "task", received_or_task)
            if getattr(task, "round", None) == hold.round:
                reached.set()
                hold.release.wait(120)
            return method(received_or_task, *args)
        return call

    if hold.kind == "upload":
        daemon.submit_update = held(daemon.submit_update)  # type: ignore[method-assign]
    else:
        daemon._evaluate = held(daemon._evaluate)  # type: ignore[method-assign]


def rounds_of(state_dir: Path) -> list[int]:
    return [json.loads(line)["round"] for line in (state_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def metrics_of(state_dir: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (state_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def final_model(state_dir: Path) -> dict[str, np.ndarray]:
    return dict(load_file(str(state_dir / "global.safetensors")))


def assert_same_model(found: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    """Equal up to the float64 summation order of a round's updates (arrival order differs)."""
    assert set(found) == set(expected)
    for name, value in expected.items():
        np.testing.assert_allclose(found[name], value, rtol=1e-5, atol=1e-6, err_msg=name)


def log_tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else f"{path} missing"

