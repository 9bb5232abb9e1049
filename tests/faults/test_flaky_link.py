"""A federation over a lossy, delayed link: the server in its own network namespace behind a
veth pair with `tc netem` loss and delay. Needs root, `ip netns` and the netem qdisc; skips
cleanly where any of them is missing."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedser_client.app import build_daemon
from fedser_shared.config import to_toml
from tests.faults import raw

pytestmark = pytest.mark.timeout(240)
NETEM = ["delay", "40ms", "10ms", "loss", "3%"]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)


@pytest.fixture
def lossy_namespace() -> Iterator[tuple[str, str]]:
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("tc") is None:
        pytest.skip("needs root with ip and tc")
    tag = secrets.token_hex(3)
    ns, host_end, ns_end = f"fedser-{tag}", f"fs{tag}a", f"fs{tag}b"
    subnet = f"10.{100 + int(tag[:2], 16) % 100}.{int(tag[2:4], 16)}"
    created = False
    try:
        _ip("netns", "add", ns)
        created = True
        _ip("link", "add", host_end, "type", "veth", "peer", "name", ns_end)
        _ip("link", "set", ns_end, "netns", ns)
        _ip("addr", "add", f"{subnet}.1/24", "dev", host_end)
        _ip("link", "set", host_end, "up")
        _ip("netns", "exec", ns, "ip", "addr", "add", f"{subnet}.2/24", "dev", ns_end)
        _ip("netns", "exec", ns, "ip", "link", "set", ns_end, "up")
        _ip("netns", "exec", ns, "ip", "link", "set", "lo", "up")
        for command in (["tc", "qdisc", "add", "dev", host_end, "root", "netem", *NETEM],
                        ["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", ns_end, "root", "netem", *NETEM]):
            subprocess.run(command, check=True, capture_output=True, text=True, timeout=10)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        detail = exc.stderr.strip() if isinstance(exc, subprocess.CalledProcessError) else "timeout"
        if created:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
        subprocess.run(["ip", "link", "del", host_end], capture_output=True, timeout=10)
        pytest.skip(f"network namespaces with netem unavailable: {detail}")
    try:
        yield ns, f"{subnet}.2"
    finally:
        subprocess.run(["ip", "link", "del", host_end], capture_output=True, timeout=10)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


def test_a_federation_over_a_lossy_delayed_link_finishes(tmp_path: Path, client_dirs: list[Path], spawn, lossy_namespace) -> None:
    ns, server_ip = lossy_namespace
    config = raw.small_config(**{"federation.rounds": 2, "federation.min_clients": 2, "federation.eval_every": 2})
    (tmp_path / "run.toml").write_text(to_toml(config))
    port = 7443  # the namespace has its own ports: nothing else listens there
    server = spawn(["-m", "fedser_server.cli", "serve", "--insecure", "--address", f"{server_ip}:{port}",
                    "--state-dir", str(tmp_path / "state"), "--config", str(tmp_path / "run.toml")],
                   tmp_path / "server.log", prefix=("ip", "netns", "exec", ns))
    daemons, results = [], {}
    try:
        for i, data_dir in enumerate(client_dirs[:2]):
            daemon = build_daemon(f"{server_ip}:{port}", data_dir, config, f"client{i}", connect_timeout_s=120)
            daemons.append(daemon)
            threading.Thread(target=lambda d=daemon, n=i: results.__setitem__(n, d.run()), daemon=True).start()
        assert server.wait(timeout=200) == 0, (tmp_path / "server.log").read_text()[-2000:]
    finally:
        for daemon in daemons:
            daemon.stop()
    metrics = [json.loads(line) for line in (tmp_path / "state" / "metrics.jsonl").read_text().splitlines()]
    assert [m["round"] for m in metrics] == [1, 2] and all(m["n_updates"] == 2 for m in metrics)
