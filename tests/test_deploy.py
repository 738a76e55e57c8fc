"""Deployment files: the Dockerfile, the compose stack, the Prometheus config, Kubernetes.

No Docker engine or cluster is reachable here, so each file is checked by the real tool that
reads it where one runs offline (hadolint, docker-compose, promtool), and by the facts the
pieces must agree on (ports, paths, labels, the job name the rules select).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from exporter import __version__
from exporter.config import load_config

from .conftest import ROOT, free_port, require_tool
from .servers import Service
from .test_security import self_signed

DEPLOY = ROOT / "deploy"
KUBE = DEPLOY / "kubernetes"
RULES = ROOT / "alerts" / "signalwire-exporter.rules.yml"
JOB = "signalwire-exporter"
EXPORTER = "signalwire-exporter"  # compose service: alerts/alertmanager.example.yml calls it so
REPLICA_2 = "signalwire-exporter-2"  # the second replica of compose's replicas profile
REPLICAS = DEPLOY / "kubernetes-replicas"


# --- Dockerfile ----------------------------------------------------------------------------

def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """(INSTRUCTION, arguments) per build stage, continuation lines joined."""
    stages: list[list[tuple[str, str]]] = [[]]
    logical = ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if not logical and (not line.strip() or line.lstrip().startswith("#")):
            continue
        logical += line.rstrip("\\").strip() + " " if line.endswith("\\") else line.strip()
        if line.endswith("\\"):
            continue
        instruction, _, arguments = logical.partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        stages[-1].append((instruction.upper(), arguments.strip()))
        logical = ""
    return stages


def final_stage(instruction: str) -> list[str]:
    return [args for name, args in dockerfile_stages()[-1] if name == instruction]


def image_uid() -> int:
    args = dict(a.split("=", 1) for a in final_stage("ARG") if "=" in a)
    return int(final_stage("USER")[-1].replace("${UID}", args.get("UID", "")))


def image_config_path() -> Path:
    env = " ".join(final_stage("ENV"))
    return Path(env.split("SIGNALWIRE_EXPORTER_CONFIG=")[1].split()[0])


def test_dockerfile_passes_hadolint() -> None:
    hadolint = require_tool("hadolint")
    result = subprocess.run([hadolint, "--failure-threshold", "warning", "Dockerfile"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_builds_the_wheel_in_a_separate_stage() -> None:
    stages = dockerfile_stages()[1:]
    assert len(stages) == 2
    assert any(name == "RUN" and "pip wheel" in args for name, args in stages[0])
    copies = final_stage("COPY")
    assert any(args.startswith("--from=build ") for args in copies)
    assert not any(args.split()[0] == "exporter" for args in copies)  # no source tree


def test_image_runs_as_non_root_with_exec_form_entrypoint() -> None:
    assert image_uid() >= 1000  # neither root nor a system account of the base image
    entrypoint = json.loads(final_stage("ENTRYPOINT")[-1])
    assert entrypoint == ["signalwire-exporter"]
    assert final_stage("EXPOSE") == ["9880"]


def test_image_config_path_is_where_the_example_is_copied() -> None:
    assert f"config.example.yaml {image_config_path()}" in final_stage("COPY")


def healthcheck(url: str) -> int:
    """Exit code of the image's HEALTHCHECK command, run here against ``url``."""
    command: list[str] = json.loads(final_stage("HEALTHCHECK")[-1].split(" CMD ", 1)[1])
    assert command[0] == "python"
    env = {**os.environ, "SIGNALWIRE_EXPORTER_HEALTHCHECK_URL": url}
    return subprocess.run([sys.executable, *command[1:]], env=env, capture_output=True,
                          timeout=30).returncode


def test_healthcheck_defaults_to_the_image_port() -> None:
    env = " ".join(final_stage("ENV"))
    assert "SIGNALWIRE_EXPORTER_HEALTHCHECK_URL=http://127.0.0.1:9880/healthz" in env


def test_healthcheck_command_tells_up_from_down(exporter_process: Any) -> None:
    exporter = exporter_process()
    assert healthcheck(f"{exporter.url}/healthz") == 0
    assert exporter.stop() == 0
    assert healthcheck(f"{exporter.url}/healthz") != 0


def test_healthcheck_command_works_with_tls(exporter_process: Any, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    exporter = exporter_process(f"web:\n  tls_cert_file: {cert}\n  tls_key_file: {key}\n",
                                scheme="https")
    assert healthcheck(f"{exporter.url}/healthz") == 0


# --- compose -------------------------------------------------------------------------------

def compose_config(**environ: str) -> dict[str, Any]:
    """The compose file as docker-compose itself resolves it (paths made absolute)."""
    tool = require_tool("docker-compose")
    result = subprocess.run([tool, "--file", str(DEPLOY / "compose.yaml"), "config"],
                            capture_output=True, text=True, timeout=60,
                            env={"PATH": "/usr/bin:/bin", "SIGNALWIRE_SIGNING_KEY": "",
                                 **environ})
    assert result.returncode == 0, result.stderr
    document: dict[str, Any] = yaml.safe_load(result.stdout)
    return document


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return compose_config()


@pytest.fixture(scope="module")
def compose_replicas() -> dict[str, Any]:
    """The stack as deploy/.env.example says to set it for two replicas."""
    return compose_config(COMPOSE_PROFILES="replicas", SIGNALWIRE_EXPORTER_STATE_BACKEND="redis")


def exporter_config(service: dict[str, Any]) -> Any:
    """The exporter config a compose service runs with: its file, its environment."""
    environment = service["environment"]
    return load_config(host_path(service, environment["SIGNALWIRE_EXPORTER_CONFIG"]),
                       environ=environment)


def bind_mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path → host path of each bind mount (named volumes left out)."""
    mounts: dict[str, Path] = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("/"):
            mounts[target] = Path(source)
    return mounts


def host_path(service: dict[str, Any], container_path: str) -> Path:
    """Where a path inside the container comes from on the host (via its bind mount)."""
    for target, source in sorted(bind_mounts(service).items(), key=lambda m: -len(m[0])):
        if container_path == target or container_path.startswith(target + "/"):
            return source / Path(container_path).relative_to(target)
    raise AssertionError(f"{container_path} is not mounted")


def test_compose_stack_has_the_four_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    default = {name for name, service in services.items() if not service.get("profiles")}
    assert default == {EXPORTER, "prometheus", "alertmanager", "grafana"}
    assert {name: services[name]["profiles"] for name in set(services) - default} == {
        REPLICA_2: ["replicas"], "redis": ["replicas"]}
    build = compose["services"][EXPORTER]["build"]
    assert Path(build["context"]) == ROOT
    assert (ROOT / build["dockerfile"]).is_file()


def test_every_path_compose_mounts_exists_in_the_repo(compose: dict[str, Any]) -> None:
    missing = [f"{name}: {source}" for name, service in compose["services"].items()
               for source in bind_mounts(service).values() if not source.exists()]
    assert not missing


def test_compose_exporter_config_is_valid(compose: dict[str, Any]) -> None:
    exporter = compose["services"][EXPORTER]
    config = exporter_config(exporter)
    assert config.port == 9880
    assert config.state.backend == "memory"
    assert {"published": 9880, "target": 9880} in [
        {k: int(v) for k, v in port.items() if k in ("published", "target")}
        for port in exporter["ports"]]


def test_env_example_names_every_variable_compose_reads() -> None:
    compose_text = (DEPLOY / "compose.yaml").read_text()
    used = set(re.findall(r"(?<!\$)\$\{([A-Z_][A-Z0-9_]*)", compose_text))
    example = (DEPLOY / ".env.example").read_text()
    listed = set(re.findall(r"^([A-Z_][A-Z0-9_]*)=", example, flags=re.M))
    assert used | {"COMPOSE_PROFILES"} == listed  # compose reads that one itself


def test_compose_replicas_share_one_persistent_redis(compose_replicas: dict[str, Any]) -> None:
    services = compose_replicas["services"]
    configs = [exporter_config(services[name]) for name in (EXPORTER, REPLICA_2)]
    for config in configs:
        assert config.state.backend == "redis"
        assert urlsplit(config.state.redis_url).hostname == "redis"
        assert urlsplit(config.state.redis_url).port == 6379
    assert configs[0].state == configs[1].state  # same Redis, same key prefix
    published = [{int(port["published"]) for port in services[name]["ports"]}
                 for name in (EXPORTER, REPLICA_2)]
    assert published == [{9880}, {9881}]
    redis = services["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    (data,) = [volume for volume in redis["volumes"] if volume.split(":")[1] == "/data"]
    assert data.split(":")[0] in compose_replicas["volumes"]  # a named volume: kept
    assert "ports" not in redis  # reachable by the exporters only


def test_prometheus_scrapes_both_replicas(compose_replicas: dict[str, Any]) -> None:
    prometheus = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    (job,) = [job for job in prometheus["scrape_configs"] if job["job_name"] == JOB]
    static = [target for group in job["static_configs"] for target in group["targets"]]
    discovered = [f"{name}:{group['port']}" for group in job["dns_sd_configs"]
                  for name in group["names"]]
    assert static + discovered == [f"{EXPORTER}:9880", f"{REPLICA_2}:9880"]
    (port,) = compose_replicas["services"][REPLICA_2]["ports"]
    assert int(port["target"]) == 9880


def test_prometheus_config_matches_the_compose_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    prometheus = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    targets = jobs[JOB]["static_configs"][0]["targets"]
    assert targets == [f"{EXPORTER}:9880"]
    alertmanagers = prometheus["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert alertmanagers == ["alertmanager:9093"]
    # rule_files resolve against the config's directory inside the container.
    config = host_path(services["prometheus"], "/etc/prometheus/prometheus.yml")
    assert config == DEPLOY / "prometheus.yml"
    (pattern,) = prometheus["rule_files"]
    rules = host_path(services["prometheus"], f"/etc/prometheus/{Path(pattern).parent}")
    assert RULES in list(rules.glob(Path(pattern).name))
    assert host_path(services["alertmanager"], "/etc/alertmanager/alertmanager.yml") == (
        ROOT / "alerts" / "alertmanager.example.yml")


def test_alertmanager_reaches_the_sms_relay_in_compose(compose: dict[str, Any]) -> None:
    alertmanager = compose["services"]["alertmanager"]
    config = yaml.safe_load(
        host_path(alertmanager, "/etc/alertmanager/alertmanager.yml").read_text())
    webhooks = [hook for receiver in config["receivers"]
                for hook in receiver.get("webhook_configs", [])]
    assert webhooks
    startup = " ".join(alertmanager["command"])
    for hook in webhooks:
        assert hook["url"] == f"http://{EXPORTER}:9880/alerts/sms"
        # The token file the config names is written from the shared env var at start-up.
        token_file = hook["http_config"]["authorization"]["credentials_file"]
        assert f"> {token_file} " in startup
    assert "SMS_WEBHOOK_TOKEN" in alertmanager["environment"]
    assert "SMS_WEBHOOK_TOKEN" in compose["services"][EXPORTER]["environment"]


def test_grafana_provisioning_points_at_the_compose_prometheus(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    provisioning = host_path(grafana, "/etc/grafana/provisioning")
    datasources = [source for path in sorted((provisioning / "datasources").glob("*.y*ml"))
                   for source in yaml.safe_load(path.read_text())["datasources"]]
    assert any(source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
               for source in datasources)
    # Every dashboard folder a provider reads is mounted and holds dashboards.
    providers = [provider for path in sorted((provisioning / "dashboards").glob("*.y*ml"))
                 for provider in yaml.safe_load(path.read_text())["providers"]]
    assert providers
    for provider in providers:
        assert list(host_path(grafana, provider["options"]["path"]).glob("*.json"))


def test_compose_prometheus_keeps_exemplars(compose: dict[str, Any]) -> None:
    """The dashboard's exemplar dots (a failing call's CallSid) need exemplar storage."""
    assert "--enable-feature=exemplar-storage" in compose["services"]["prometheus"]["command"]


def test_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    # Lay the files out as compose mounts them, so rule_files resolves as in the container.
    shutil.copy(DEPLOY / "prometheus.yml", tmp_path / "prometheus.yml")
    (tmp_path / "rules").symlink_to(ROOT / "alerts")
    result = subprocess.run([promtool, "check", "config", str(tmp_path / "prometheus.yml")],
                            capture_output=True, text=True, timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "signalwire-exporter.rules.yml" in output  # the rules were found and checked


def test_prometheus_runs_the_deploy_config_against_a_live_exporter(
        tmp_path: Path, exporter_process: Any, services: list[Any]) -> None:
    # deploy/prometheus.yml as compose runs it, with only the addresses moved to loopback
    # and the intervals shortened: the job scrapes, and the bundled rules load.
    binary = require_tool("prometheus")
    exporter = exporter_process()
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [f"127.0.0.1:{exporter.port}"]}]
    config["alerting"]["alertmanagers"][0]["static_configs"] = [
        {"targets": [f"127.0.0.1:{free_port()}"]}]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    (tmp_path / "rules").symlink_to(ROOT / "alerts")
    port = free_port()
    prometheus = Service("prometheus", [
        binary, f"--config.file={tmp_path / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
    ], f"http://127.0.0.1:{port}", "/-/ready", tmp_path)
    services.append(prometheus)
    groups = prometheus.get_json("/api/v1/rules")["data"]["groups"]
    alerts = {rule["name"] for group in groups for rule in group["rules"]
              if rule["type"] == "alerting"}
    assert {"SignalWireCallFailuresHigh", "SignalWireExporterDown"} <= alerts
    deadline = time.monotonic() + 30
    up: list[Any] = []
    while time.monotonic() < deadline and not up:
        up = prometheus.get_json("/api/v1/query", query=f'up{{job="{JOB}"}} == 1')[
            "data"]["result"]
        time.sleep(0.5)
    assert up, prometheus.log()


# --- Kubernetes ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def manifests() -> dict[str, dict[str, Any]]:
    """Kind → manifest, for every resource the kustomization lists."""
    kustomization = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
    by_kind: dict[str, dict[str, Any]] = {}
    for name in kustomization["resources"]:
        for document in yaml.safe_load_all((KUBE / name).read_text()):
            assert {"apiVersion", "kind", "metadata"} <= set(document), name
            assert document["metadata"]["name"] == JOB
            by_kind[document["kind"]] = document
    return by_kind


def test_kustomization_lists_every_manifest(manifests: dict[str, dict[str, Any]]) -> None:
    assert set(manifests) == {"ConfigMap", "Deployment", "Service", "ServiceMonitor",
                              "PrometheusRule"}
    files = {p.name for p in KUBE.glob("*.yaml")} - {"kustomization.yaml"}
    listed = set(yaml.safe_load((KUBE / "kustomization.yaml").read_text())["resources"])
    assert listed == files
    assert manifests["Deployment"]["apiVersion"] == "apps/v1"
    assert manifests["ServiceMonitor"]["apiVersion"] == "monitoring.coreos.com/v1"
    assert manifests["PrometheusRule"]["apiVersion"] == "monitoring.coreos.com/v1"


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def test_selectors_and_ports_agree(manifests: dict[str, dict[str, Any]]) -> None:
    deployment, service = manifests["Deployment"], manifests["Service"]
    monitor = manifests["ServiceMonitor"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert matches(deployment["spec"]["selector"]["matchLabels"], pod_labels)
    assert matches(service["spec"]["selector"], pod_labels)
    assert matches(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])

    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    container_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container_ports == {"http": 9880}
    service_ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert service_ports["http"]["targetPort"] in container_ports
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in service_ports
        assert endpoint["path"] == "/metrics"
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http"}


def test_servicemonitor_scrapes_as_the_job_the_rules_select(
        manifests: dict[str, dict[str, Any]]) -> None:
    # The operator takes the job label from the Service label jobLabel names.
    monitor, service = manifests["ServiceMonitor"], manifests["Service"]
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == JOB


def test_deployment_runs_the_image_as_built(manifests: dict[str, dict[str, Any]]) -> None:
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"].rsplit(":", 1)[1] == __version__
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == image_uid()
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    # The ConfigMap lands where the image's SIGNALWIRE_EXPORTER_CONFIG points.
    config_path = image_config_path()
    (mount,) = container["volumeMounts"]
    assert Path(mount["mountPath"]) == config_path.parent
    (volume,) = pod["volumes"]
    assert volume["name"] == mount["name"]
    configmap = manifests["ConfigMap"]
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    assert config_path.name in configmap["data"]


def test_configmap_config_is_valid(manifests: dict[str, dict[str, Any]],
                                   tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(manifests["ConfigMap"]["data"]["config.yaml"])
    config = load_config(path, environ={"SIGNALWIRE_SIGNING_KEY": "PSK_test"})
    assert config.port == 9880
    assert config.signature.signing_keys == ("PSK_test",)
    assert config.state.backend == "memory"


def test_manifests_pass_kubernetes_schema_validation(tmp_path: Path) -> None:
    validate = require_tool("kubernetes-validate")
    rendered = tmp_path / "replicas.yaml"
    rendered.write_text(kustomize(REPLICAS))
    # --strict: an unknown field is an error too. The prometheus-operator kinds have no
    # built-in schema (a warning).
    result = subprocess.run([validate, "--strict", "--quiet", *sorted(KUBE.glob("*.yaml")),
                             str(rendered)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ERROR" not in result.stdout + result.stderr


def kustomize(directory: Path) -> str:
    """What `kubectl apply -k directory` would apply, rendered offline."""
    kubectl = require_tool("kubectl")
    result = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def replicas() -> dict[tuple[str, str], dict[str, Any]]:
    """(kind, name) → resource, as the kubernetes-replicas overlay renders them."""
    return {(doc["kind"], doc["metadata"]["name"]): doc
            for doc in yaml.safe_load_all(kustomize(REPLICAS))}


def test_replicas_overlay_runs_two_exporters_on_redis(
        replicas: dict[tuple[str, str], dict[str, Any]], tmp_path: Path) -> None:
    deployment = replicas[("Deployment", JOB)]
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {var["name"]: var for var in container["env"]}
    assert env["SIGNALWIRE_EXPORTER_STATE_BACKEND"]["value"] == "redis"
    # The Redis URL (it may carry a password) comes from the Secret the signing key is in.
    url = env["SIGNALWIRE_EXPORTER_REDIS_URL"]["valueFrom"]["secretKeyRef"]
    signing_key = env["SIGNALWIRE_SIGNING_KEY"]["valueFrom"]["secretKeyRef"]
    assert (url["name"], url["key"]) == (signing_key["name"], "redis-url")
    # The ConfigMap's config, given that environment and the URL the overlay's notes
    # put in the Secret, runs on that Redis.
    notes = (REPLICAS / "kustomization.yaml").read_text()
    (example_url,) = re.findall(r'redis-url="(redis://[^"]+)"', notes)
    path = tmp_path / "config.yaml"
    path.write_text(replicas[("ConfigMap", JOB)]["data"]["config.yaml"])
    config = load_config(path, environ={
        "SIGNALWIRE_EXPORTER_STATE_BACKEND": "redis",
        "SIGNALWIRE_EXPORTER_REDIS_URL": example_url.replace("$REDIS_PASSWORD", "pw")})
    assert config.state.backend == "redis"
    # ... which is the overlay's Redis Service.
    host = urlsplit(config.state.redis_url).hostname
    service = replicas[("Service", str(host))]
    redis = replicas[("Deployment", str(host))]
    assert service["spec"]["ports"][0]["port"] == urlsplit(config.state.redis_url).port
    assert matches(service["spec"]["selector"], redis["spec"]["template"]["metadata"]["labels"])
    # Exporter pods and the Redis pod are told apart by every selector.
    exporter_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert not matches(service["spec"]["selector"], exporter_labels)
    assert not matches(deployment["spec"]["selector"]["matchLabels"],
                       redis["spec"]["template"]["metadata"]["labels"])


def test_replicas_overlay_disruption_budget_keeps_one_serving(
        replicas: dict[tuple[str, str], dict[str, Any]]) -> None:
    budget = replicas[("PodDisruptionBudget", JOB)]["spec"]
    deployment = replicas[("Deployment", JOB)]
    redis = replicas[("Deployment", "signalwire-exporter-redis")]
    assert matches(budget["selector"]["matchLabels"],
                   deployment["spec"]["template"]["metadata"]["labels"])
    assert not matches(budget["selector"]["matchLabels"],
                       redis["spec"]["template"]["metadata"]["labels"])
    assert 1 <= budget["minAvailable"] < deployment["spec"]["replicas"]


def test_replicas_overlay_redis_keeps_its_data(
        replicas: dict[tuple[str, str], dict[str, Any]]) -> None:
    redis = replicas[("Deployment", "signalwire-exporter-redis")]
    pod = redis["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = container["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    (mount,) = container["volumeMounts"]
    assert mount["mountPath"] == "/data"
    (volume,) = pod["volumes"]
    claim = volume["persistentVolumeClaim"]["claimName"]
    assert ("PersistentVolumeClaim", claim) in replicas
    assert redis["spec"]["strategy"]["type"] == "Recreate"  # one pod owns the volume
    # The password it requires is the Secret's, and the pod runs as non-root.
    password = {var["name"]: var for var in container["env"]}["REDIS_PASSWORD"]
    assert password["valueFrom"]["secretKeyRef"]["key"] == "redis-password"
    assert "$(REDIS_PASSWORD)" in args
    assert pod["securityContext"]["runAsNonRoot"] is True
    for resource in replicas.values():
        assert resource["metadata"]["namespace"] == "monitoring"


def test_prometheusrule_is_generated_from_the_rule_file() -> None:
    generated = subprocess.run([sys.executable, str(ROOT / "tools" / "prometheusrule.py")],
                               capture_output=True, text=True, timeout=60, check=True).stdout
    committed = (KUBE / "prometheusrule.yaml").read_text()
    assert committed == generated, (
        "run: python3 tools/prometheusrule.py > deploy/kubernetes/prometheusrule.yaml")
    rules = yaml.safe_load(RULES.read_text())
    assert yaml.safe_load(committed)["spec"]["groups"] == rules["groups"]


def test_stop_timeouts_leave_room_for_the_exporters_own_stop(
        compose: dict[str, Any], manifests: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    # After SIGTERM the exporter may wait for a last scrape, then drains: an orchestrator
    # that kills it sooner loses exactly the counts that wait is for.
    from exporter.cli import SHUTDOWN_TIMEOUT_SECONDS

    def own_stop(config: Any) -> float:
        return float(config.shutdown.final_scrape_timeout_seconds) + SHUTDOWN_TIMEOUT_SECONDS

    exporter = compose["services"][EXPORTER]
    assert float(exporter["stop_grace_period"].removesuffix("s")) > own_stop(
        exporter_config(exporter))
    path = tmp_path / "config.yaml"
    path.write_text(manifests["ConfigMap"]["data"]["config.yaml"])
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] > float(command[1]) + own_stop(
        load_config(path, environ={}))
