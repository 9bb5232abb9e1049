"""The server's session settings come from the run's configuration ([server]), flags override them."""

from __future__ import annotations

from pathlib import Path

from fedser_server import app as server_app
from fedser_shared.config import to_toml
from tests.faults import raw


def _heartbeat_told(tmp_path: Path, **overrides: object) -> float:
    server = raw.start(tmp_path, **overrides)
    channel, stub = raw.stub_for(server.port)
    try:
        return raw.join(stub).heartbeat_interval_s
    finally:
        channel.close()
        server.shutdown(grace_s=0.2)


def test_clients_are_told_a_heartbeat_that_fits_the_configured_client_timeout(tmp_path: Path) -> None:
    assert _heartbeat_told(tmp_path / "a", **{"server.client_timeout_s": 8.0}) == 2.0
    assert _heartbeat_told(tmp_path / "b", **{"server.client_timeout_s": 8.0, "server.heartbeat_interval_s": 3.0}) == 3.0


def test_a_flag_overrides_the_file_and_a_resumed_run_keeps_its_saved_settings(tmp_path: Path) -> None:
    config_path = tmp_path / "run.toml"
    config_path.write_text(to_toml(raw.small_config(**{"server.client_timeout_s": 30.0, "admission.uploads": 3})))
    fresh = server_app.run_config_for(tmp_path / "state", config_path, {"server.client_timeout_s": 45.0}, resume=False)
    assert fresh.server.client_timeout_s == 45.0 and fresh.admission.uploads == 3
    server_app.build_loop(fresh, tmp_path / "state").close()  # saves the run's configuration
    resumed = server_app.run_config_for(tmp_path / "state", None, {"server.client_timeout_s": None}, resume=True)
    assert resumed.server.client_timeout_s == 45.0 and resumed.admission.uploads == 3
    changed = server_app.run_config_for(tmp_path / "state", None, {"server.client_timeout_s": 90.0}, resume=True)
    assert changed.server.client_timeout_s == 90.0
