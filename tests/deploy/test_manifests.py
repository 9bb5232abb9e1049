"""deploy/ is validated offline: hadolint (Dockerfiles), the compose spec schema, kustomize + the
Kubernetes schemas; each validator is also shown to fail on a broken copy. The manifests may only
use flags the CLIs know."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main
import yaml

from fedser_client.cli import app as client_app
from fedser_server.cli import app as server_app

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILES = sorted((DEPLOY / "docker").glob("*.Dockerfile"))
COMPOSE_FILES = [DEPLOY / "compose.yaml", DEPLOY / "compose.gpu.yaml"]
KUSTOMIZATIONS = [DEPLOY / "k8s" / "base", DEPLOY / "k8s" / "client"]
KUBERNETES_VERSION = "1.37.0"
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    path = shutil.which(name, path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    assert path, f"{name} is missing: pip install -e '.[dev]' installs it"
    return path


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=120)


# ---------------------------------------------------------------- Dockerfiles
def test_dockerfiles_pass_hadolint() -> None:
    assert len(DOCKERFILES) == 2
    result = run(tool("hadolint"), *DOCKERFILES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_fails_on_a_broken_dockerfile(tmp_path: Path) -> None:
    broken = tmp_path / "server.Dockerfile"
    broken.write_text(DOCKERFILES[0].read_text().replace("USER 10001:10001", "RUN apt-get install curl\nUSER 10001:10001"))
    result = run(tool("hadolint"), broken)
    assert result.returncode != 0 and "DL3008" in result.stdout


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_images_run_as_non_root_in_two_stages(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) == 2 and "COPY --from=build" in text
    assert re.findall(r"^USER (.+)$", text, re.M)[-1] == "10001:10001"
    assert "HEALTHCHECK" in text and "torch==2.13.0" in text


def test_server_healthcheck_runs_the_packaged_probe() -> None:
    text = (DEPLOY / "docker" / "server.Dockerfile").read_text()
    assert 'CMD ["python3", "-m", "fedser_server.probe"]' in text


# ---------------------------------------------------------------- compose
def test_compose_files_match_the_compose_spec() -> None:
    result = run(tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", *COMPOSE_FILES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_compose_schema_check_fails_on_a_broken_file(tmp_path: Path) -> None:
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE_FILES[0].read_text().replace("    healthcheck:\n", "    healthchek:\n", 1))
    result = run(tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", broken)
    assert result.returncode != 0 and "healthchek" in result.stdout


def test_compose_runs_a_server_and_three_clients_wired_by_service_name() -> None:
    spec = yaml.safe_load(COMPOSE_FILES[0].read_text())
    services = spec["services"]
    clients = sorted(name for name in services if name.startswith("client-"))
    assert clients == ["client-1", "client-2", "client-3"]
    for name in clients:
        service = services[name]
        assert "--server=server:7443" in service["command"] and f"--name={name}" in service["command"]
        assert service["depends_on"]["server"]["condition"] == "service_healthy"
        assert service["volumes"] == [f"./data/{name}:/data"]  # a data volume of its own
        assert service["environment"]["FEDSER_TOKEN_FILE"] == f"/run/secrets/{name}_token"
    declared = set(spec["secrets"])
    for name, service in services.items():
        assert set(service.get("secrets", [])) <= declared, name


# ---------------------------------------------------------------- Kubernetes
def kustomize(directory: Path, out: Path) -> Path:
    result = run(tool("kubectl"), "kustomize", directory)
    assert result.returncode == 0, result.stderr
    out.write_text(result.stdout)
    return out


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda p: p.name)
def test_kustomizations_render_and_match_the_kubernetes_schemas(directory: Path, tmp_path: Path) -> None:
    rendered = kustomize(directory, tmp_path / "rendered.yaml")
    result = run(tool("kubernetes-validate"), "--strict", "-k", KUBERNETES_VERSION, rendered)
    assert result.returncode == 0, result.stdout + result.stderr


def test_kubernetes_validation_fails_on_a_broken_manifest(tmp_path: Path) -> None:
    copy = tmp_path / "base"
    shutil.copytree(KUSTOMIZATIONS[0], copy)
    deployment = copy / "server-deployment.yaml"
    deployment.write_text(deployment.read_text().replace("      containers:\n", "      container:\n", 1))
    result = run(tool("kubernetes-validate"), "--strict", "-k", KUBERNETES_VERSION, kustomize(copy, tmp_path / "rendered.yaml"))
    assert result.returncode != 0


def test_the_server_deployment_has_what_an_operator_needs(tmp_path: Path) -> None:
    docs = list(yaml.safe_load_all(kustomize(KUSTOMIZATIONS[0], tmp_path / "r.yaml").read_text()))
    kinds = {d["kind"]: d for d in docs}
    assert set(kinds) == {"Deployment", "Service", "PersistentVolumeClaim"}
    deployment = kinds["Deployment"]["spec"]
    assert deployment["replicas"] == 1 and deployment["strategy"]["type"] == "Recreate"
    container = deployment["template"]["spec"]["containers"][0]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["exec"]["command"] == ["python3", "-m", "fedser_server.probe"]
    assert container["resources"]["requests"]
    secrets = {v["secret"]["secretName"] for v in deployment["template"]["spec"]["volumes"] if "secret" in v}
    assert secrets == {"fedser-server-tls", "fedser-tokens"}


# ---------------------------------------------------------------- manifests vs CLI
def _options(app: typer.Typer, command: str) -> set[str]:
    click_command = typer.main.get_command(app).commands[command]  # type: ignore[attr-defined]
    return {opt for param in click_command.params for opt in param.opts}


def _flags(args: list[str]) -> set[str]:
    return {a.split("=", 1)[0] for a in args if a.startswith("--")}


def _commands() -> list[tuple[str, list[str]]]:
    found: list[tuple[str, list[str]]] = []
    for path in COMPOSE_FILES[:1]:
        for name, service in yaml.safe_load(path.read_text())["services"].items():
            if isinstance(service.get("command"), list) and "entrypoint" not in service:
                found.append((f"{path.name}:{name}", service["command"]))
    for directory in KUSTOMIZATIONS:
        for manifest in directory.glob("*.yaml"):
            for doc in yaml.safe_load_all(manifest.read_text()):
                spec = (doc or {}).get("spec", {}).get("template", {}).get("spec", {})
                for container in spec.get("containers", []):
                    found.append((f"{manifest.name}:{container['name']}", container["args"]))
    for dockerfile in DOCKERFILES:
        cmd = re.search(r'^CMD (\[.*?\])\s*$', dockerfile.read_text().replace("\\\n", ""), re.M | re.S)
        assert cmd, dockerfile
        found.append((dockerfile.name, yaml.safe_load(cmd.group(1))))
    return found


def test_manifests_use_only_flags_the_clis_know() -> None:
    commands = _commands()
    assert len(commands) >= 7
    for where, args in commands:
        app = server_app if args[0] in ("serve", "status", "report", "probe") else client_app
        unknown = _flags(args[1:]) - _options(app, args[0])
        assert not unknown, f"{where}: {args[0]} has no {sorted(unknown)}"


# ---------------------------------------------------------------- client entrypoint
def test_client_entrypoint_reads_the_token_file(tmp_path: Path) -> None:
    stub = tmp_path / "bin" / "fedser-client"
    stub.parent.mkdir()
    stub.write_text('#!/bin/sh\necho "token=$FEDSER_TOKEN args=$*"\n')
    stub.chmod(0o755)
    token = tmp_path / "token"
    token.write_text("fedser_abc123\n")
    env = {"PATH": f"{stub.parent}:/usr/bin:/bin", "FEDSER_TOKEN_FILE": str(token)}
    entrypoint = DEPLOY / "docker" / "client-entrypoint.sh"
    result = subprocess.run(["sh", str(entrypoint), "join", "--insecure"], capture_output=True, text=True, env=env, timeout=30)
    assert result.returncode == 0 and result.stdout.strip() == "token=fedser_abc123 args=join --insecure"
    env["FEDSER_TOKEN_FILE"] = str(tmp_path / "missing")
    result = subprocess.run(["sh", str(entrypoint), "join"], capture_output=True, text=True, env=env, timeout=30)
    assert result.returncode == 2 and "cannot read FEDSER_TOKEN_FILE" in result.stderr
