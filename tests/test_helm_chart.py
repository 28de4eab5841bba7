"""deploy/helm/otel-reliability with the real Helm (built by scripts/build-tools.sh) and the built collector.

`helm lint` and `helm template` pass; the rendered collector configurations are collector-config/'s, and the
collector validates them with the environment the chart gives each container; the gateway pool is a
Deployment behind a headless Service the agents reach by dns:/// round robin, with a PodDisruptionBudget and
memory_limiter at 80% of the container's memory; the app's probes are the README's.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import ROOT, built_tool, ensure_collector, require

CHART = ROOT / "deploy" / "helm" / "otel-reliability"
CONFIG = ROOT / "collector-config"
REMOTE_WRITE = "http://vminsert.monitoring:8480/insert/0/prometheus/api/v1/write"


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    binary = built_tool("helm")
    require(binary is not None, "build/helm (make tools)")
    assert binary is not None
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=120)


def render(*sets: str, release: str = "obs", namespace: str = "monitoring") -> list[dict[str, Any]]:
    args = ["template", release, str(CHART), "--namespace", namespace, "--set", f"remoteWrite.url={REMOTE_WRITE}"]
    for s in sets:
        args += ["--set", s]
    done = helm(*args)
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, (kind, name, [(d["kind"], d["metadata"]["name"]) for d in docs])
    return found[0]


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def memory_mib(container: dict[str, Any]) -> int:
    limit = container["resources"]["limits"]["memory"]
    assert limit.endswith("Mi")
    return int(limit.removesuffix("Mi"))


@pytest.mark.parametrize(
    "sets",
    [(), ("agent.mode=sidecar", "app.enabled=true", "app.image=registry.example/app:1", "healthToken.value=s3cret")],
    ids=["daemonset", "sidecar-with-app"],
)
def test_helm_lint_passes(sets: tuple[str, ...]) -> None:
    args = ["lint", "--strict", str(CHART), "--set", f"remoteWrite.url={REMOTE_WRITE}"]
    for s in sets:
        args += ["--set", s]
    done = helm(*args)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_remote_write_url_is_required_and_a_bad_agent_mode_is_refused() -> None:
    done = helm("template", "obs", str(CHART))
    assert done.returncode != 0 and "remoteWrite.url" in done.stderr
    done = helm("template", "obs", str(CHART), "--set", f"remoteWrite.url={REMOTE_WRITE}", "--set", "agent.mode=node")
    assert done.returncode != 0 and "agent.mode must be daemonset or sidecar" in done.stderr


def test_gateway_pool_headless_service_pdb_and_memory_limiter() -> None:
    docs = render()
    deployment = one(docs, "Deployment", "obs-otel-reliability-gateway")
    assert deployment["spec"]["replicas"] == 2
    gateway = deployment["spec"]["template"]["spec"]["containers"][0]
    env = env_of(gateway)
    assert env["OTEL_RELIABILITY_REMOTE_WRITE_URL"] == REMOTE_WRITE
    assert int(env["OTEL_RELIABILITY_COLLECTOR_MEMORY_LIMIT_MIB"]) == memory_mib(gateway) * 4 // 5 == 1024
    service = one(docs, "Service", "obs-otel-reliability-gateway")
    assert service["spec"]["clusterIP"] == "None"  # headless: the name resolves to every pod
    pdb = one(docs, "PodDisruptionBudget", "obs-otel-reliability-gateway")
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]

    agents = one(docs, "DaemonSet", "obs-otel-reliability-agent")
    agent = agents["spec"]["template"]["spec"]["containers"][0]
    env = env_of(agent)
    assert (
        env["OTEL_RELIABILITY_GATEWAY_ENDPOINT"]
        == "dns:///obs-otel-reliability-gateway.monitoring.svc.cluster.local:4417"
    )
    assert int(env["OTEL_RELIABILITY_COLLECTOR_MEMORY_LIMIT_MIB"]) == memory_mib(agent) * 4 // 5 == 256
    assert one(docs, "Service", "obs-otel-reliability-agent")["spec"]["internalTrafficPolicy"] == "Local"

    instrumentation = one(docs, "Instrumentation", "obs-otel-reliability")
    spec = instrumentation["spec"]
    assert spec["exporter"]["endpoint"] == "http://obs-otel-reliability-agent.monitoring.svc.cluster.local:4318"
    assert {"name": "OTEL_EXPORTER_OTLP_PROTOCOL", "value": "http/protobuf"} in spec["python"]["env"]
    assert not [d for d in docs if d["kind"] == "Secret"], "no token given: no Secret"


def test_rendered_configs_are_collector_configs_and_the_collector_validates_them(tmp_path: Path) -> None:
    collector = ensure_collector()
    docs = render("agent.mode=sidecar", "app.enabled=true", "app.image=registry.example/app:1")
    pod = one(docs, "Deployment", "example-app")["spec"]["template"]["spec"]
    agent = next(c for c in pod["containers"] if c["name"] == "otel-agent")
    gateway = one(docs, "Deployment", "obs-otel-reliability-gateway")["spec"]["template"]["spec"]["containers"][0]
    assert env_of(agent)["OTEL_RELIABILITY_COLLECTOR_HTTP_ENDPOINT"] == "127.0.0.1:4318"  # sidecar: localhost
    for part, container in (("agent", agent), ("gateway", gateway)):
        config = one(docs, "ConfigMap", f"obs-otel-reliability-{part}")["data"][f"{part}.yaml"]
        assert config.strip() == (CONFIG / f"{part}.yaml").read_text().strip(), f"{part}.yaml is not collector-config's"
        path = tmp_path / f"{part}.yaml"
        path.write_text(config)
        assert container["args"] == [f"--config=/conf/{part}.yaml"]
        done = subprocess.run([str(collector), "validate", f"--config={path}"], env={"PATH": "/usr/bin:/bin",
                              **env_of(container)}, capture_output=True, text=True, timeout=60)  # fmt: skip
        assert done.returncode == 0, (part, done.stdout + done.stderr)


def readme_probes() -> dict[str, dict[str, Any]]:
    """The README's probe table ("On Kubernetes"): probe, path, periodSeconds, timeoutSeconds, failureThreshold."""
    section = (ROOT / "README.md").read_text().split("## On Kubernetes", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (startup|liveness|readiness) \| `([^`]+)` \| (\d+) \| (\d+) \| (\d+) \|", section, re.M)
    assert len(rows) == 3, rows
    return {
        probe: {"path": path, "periodSeconds": int(p), "timeoutSeconds": int(t), "failureThreshold": int(f)}
        for probe, path, p, t, f in rows
    }


def test_app_probes_are_the_readmes_and_the_health_token_is_a_secret() -> None:
    docs = render("app.enabled=true", "app.image=registry.example/app:1", "healthToken.value=s3cret")
    pod = one(docs, "Deployment", "example-app")["spec"]["template"]
    annotations = pod["metadata"]["annotations"]
    assert annotations["instrumentation.opentelemetry.io/inject-python"] == "monitoring/obs-otel-reliability"
    app = next(c for c in pod["spec"]["containers"] if c["name"] == "app")
    for probe, wanted in readme_probes().items():
        got = app[f"{probe}Probe"]
        assert got["httpGet"]["path"] == wanted.pop("path")
        assert {k: got[k] for k in wanted} == wanted, probe
    token = next(e for e in app["env"] if e["name"] == "OTEL_RELIABILITY_HEALTH_TOKEN")
    ref = token["valueFrom"]["secretKeyRef"]
    secret = one(docs, "Secret", ref["name"])
    assert ref["key"] in secret["data"] and "s3cret" not in yaml.safe_dump(docs)  # base64 in the Secret only
    # A Secret of one's own: referenced, none created.
    docs = render("app.enabled=true", "app.image=registry.example/app:1", "healthToken.existingSecret=mine")
    app = next(c for c in one(docs, "Deployment", "example-app")["spec"]["template"]["spec"]["containers"])
    ref = next(e for e in app["env"] if e["name"] == "OTEL_RELIABILITY_HEALTH_TOKEN")["valueFrom"]["secretKeyRef"]
    assert ref["name"] == "mine" and not [d for d in docs if d["kind"] == "Secret"]
