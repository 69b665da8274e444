"""deploy/: the container image and the Kubernetes manifests agree with the gateway's
configuration.

The ConfigMap's gateway.toml is parsed with :func:`parse_config` inside a fake root
holding exactly the files the Deployment (and the migration Job) mounts, so a path the
TOML names that no volume provides fails here; ports, probes, the ServiceMonitor, the
PostgreSQL Service, the Secrets' keys, the worker count and the image's entry point are
checked against the same configuration.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest

from gateway.domain.catalog import load_catalog
from gateway.runtime.config import Config, parse_config
from gateway.runtime.workers import check_workers

yaml = pytest.importorskip("yaml", reason="NOT RUN: PyYAML (a dev dependency) is missing")

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"
K8S = DEPLOY / "kubernetes"


def _docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text(encoding="utf-8")) if d]


def _one(name: str, kind: str) -> dict[str, Any]:
    [doc] = [d for d in _docs(name) if d["kind"] == kind]
    return doc


def _toml() -> str:
    return str(_one("configmap.yaml", "ConfigMap")["data"]["gateway.toml"])


def _container(pod: dict[str, Any]) -> dict[str, Any]:
    [container] = pod["spec"]["containers"]
    return dict(container)


def _mounted_files(pod: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Absolute path -> (kind, source name) of every file the pod's container mounts;
    folders (emptyDir) as path -> ("emptyDir", "")."""
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    files: dict[str, tuple[str, str]] = {}
    for mount in _container(pod)["volumeMounts"]:
        volume = volumes[mount["name"]]
        if "emptyDir" in volume:
            files[mount["mountPath"]] = ("emptyDir", "")
            continue
        kind = "secret" if "secret" in volume else "configMap"
        source = volume[kind]
        name = source["secretName"] if kind == "secret" else source["name"]
        assert source.get("items"), f"volume {mount['name']}: name its keys (items)"
        for item in source["items"]:
            files[f"{mount['mountPath']}/{item['path']}"] = (kind, f"{name}:{item['key']}")
    return files


def _config_in(root: Path, pod: dict[str, Any]) -> Config:
    """Parse the ConfigMap's TOML with its absolute paths moved under ``root``, where
    only what ``pod`` mounts exists."""
    for path, (kind, _) in _mounted_files(pod).items():
        target = root / path.lstrip("/")
        if kind == "emptyDir":
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text("mounted", encoding="utf-8")
    text = re.sub(r'"(/(?:etc|var)/[^"]*)"', lambda m: f'"{root}{m.group(1)}"', _toml())
    return parse_config(tomllib.loads(text), base=root)


def _pod(kind_file: str, kind: str) -> dict[str, Any]:
    doc = _one(kind_file, kind)
    return dict(doc["spec"]["template"])


def test_every_path_the_config_names_is_mounted_in_the_gateway_and_the_migration_job(
    tmp_path: Path,
) -> None:
    for n, (file, kind) in enumerate(
        [("deployment.yaml", "Deployment"), ("migrate-job.yaml", "Job")]
    ):
        config = _config_in(tmp_path / str(n), _pod(file, kind))
        assert config.storage.url_for("policy") and config.storage.url_for("audit")
    # And nothing is mounted twice or at the root.
    mounts = [
        m["mountPath"] for m in _container(_pod("deployment.yaml", "Deployment"))["volumeMounts"]
    ]
    assert len(mounts) == len(set(mounts)) and "/" not in mounts


def test_ports_probes_service_and_service_monitor_agree_with_the_config(tmp_path: Path) -> None:
    pod = _pod("deployment.yaml", "Deployment")
    config = _config_in(tmp_path, pod)
    container = _container(pod)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    listen_port = int(config.listen.rpartition(":")[2])
    assert config.metrics_listen is not None
    assert ports == {"grpc": listen_port, "metrics": int(config.metrics_listen.rpartition(":")[2])}
    # Readiness: the gRPC health service over mutual TLS, on the configured port, with
    # a probe certificate that is mounted.
    probe = container["readinessProbe"]["exec"]["command"]
    assert probe[0] == "/usr/local/bin/grpc_health_probe"
    flags = dict(a.lstrip("-").split("=", 1) for a in probe[1:] if "=" in a)
    assert flags["addr"] == f"127.0.0.1:{listen_port}" and flags["service"] == ""
    assert "-tls" in probe
    mounted = _mounted_files(pod)
    for key in ("tls-ca-cert", "tls-client-cert", "tls-client-key"):
        assert flags[key] in mounted, key
    # Liveness does not depend on the database: a NOT_SERVING pod is taken out, not killed.
    assert container["livenessProbe"]["tcpSocket"]["port"] == "grpc"
    # A pod may drain its workers before it is killed.
    assert pod["spec"]["terminationGracePeriodSeconds"] >= config.drain_grace_s + 15

    service = _one("service.yaml", "Service")
    by_name = {p["name"]: p for p in service["spec"]["ports"]}
    assert by_name["grpc"]["targetPort"] == "grpc" and by_name["metrics"]["targetPort"] == "metrics"
    labels = pod["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in service["spec"]["selector"].items())
    monitor = _one("servicemonitor.yaml", "ServiceMonitor")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"


def test_workers_database_and_departments_agree_with_the_config(tmp_path: Path) -> None:
    pod = _pod("deployment.yaml", "Deployment")
    config = _config_in(tmp_path, pod)
    args = _container(pod)["args"]
    assert args[:3] == ["serve", "--config", "/etc/credit-gateway/config/gateway.toml"]
    workers = int(args[args.index("--workers") + 1])
    check_workers(config, workers)  # the audit log is on PostgreSQL: more than one is allowed
    env = {e["name"]: e["value"] for e in _container(pod)["env"]}
    assert any(
        env["PROMETHEUS_MULTIPROC_DIR"].startswith(path)
        for path, (kind, _) in _mounted_files(pod).items()
        if kind == "emptyDir"
    ), "the metrics folder must be writable (the root file system is read-only)"
    # The database the config names is the PostgreSQL Service.
    url = config.storage.url_for("policy")
    assert url is not None
    host_port = url.split("@", 1)[1].split("/", 1)[0]
    db = _one("postgres.yaml", "Service")
    assert host_port == f"{db['metadata']['name']}:{db['spec']['ports'][0]['port']}"
    assert config.storage.password_file is not None and "password" not in url.split("@")[0]
    assert set(config.departments) == set(load_catalog().departments)
    job = _container(_pod("migrate-job.yaml", "Job"))
    assert job["args"] == ["db", "migrate", "--config", args[2]]
    assert job["image"] == _container(pod)["image"]


def test_the_secrets_example_names_every_key_mounted_and_holds_no_key() -> None:
    documented = {
        f"{d['metadata']['name']}:{key}"
        for d in _docs("secrets.example.yaml")
        for key in (d.get("stringData") or d.get("data") or {})
    }
    for file, kind in (("deployment.yaml", "Deployment"), ("migrate-job.yaml", "Job")):
        for _, (source_kind, source) in _mounted_files(_pod(file, kind)).items():
            if source_kind == "secret" or source.startswith("credit-gateway-issuers:"):
                assert source in documented, source
    text = (K8S / "secrets.example.yaml").read_text(encoding="utf-8")
    assert "BEGIN" not in text  # no PEM block, no private key


def test_the_image_exposes_the_ports_and_runs_the_console_script() -> None:
    text = (DEPLOY / "Containerfile").read_text(encoding="utf-8")
    exposed = {
        int(p) for line in text.splitlines() if line.startswith("EXPOSE") for p in line.split()[1:]
    }
    pod = _pod("deployment.yaml", "Deployment")
    assert exposed == {p["containerPort"] for p in _container(pod)["ports"]}
    assert 'ENTRYPOINT ["credit-gateway"]' in text
    assert "/usr/local/bin/grpc_health_probe" in text
    user = re.search(r"^USER (\d+)$", text, re.M)
    assert user is not None and int(user.group(1)) == pod["spec"]["securityContext"]["runAsUser"]
    cmd = re.search(r"^CMD (\[.*\])$", text, re.M)
    assert (
        cmd is not None
        and shlex.split(cmd.group(1).strip("[]").replace(",", " ")) == _container(pod)["args"]
    )


def test_kustomization_lists_every_manifest_but_the_example() -> None:
    listed = set(_one("kustomization.yaml", "Kustomization")["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secrets.example.yaml"}
    assert listed == present
