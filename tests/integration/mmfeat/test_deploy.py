"""deploy/: `make deploy-check` passes (every values file's render valid under kubeconform, strict, no kind
skipped; Prometheus config and rules), and the chart renders what an operator relies on: the autoscaler capped at
the partitions, Triton's probes and GPUs, credentials only from the Secret, settings that cannot work refused."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from mmfeat.settings import PROJECT_ROOT

CHART = PROJECT_ROOT / "deploy" / "helm" / "mmfeat"


def _check_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("deploy_check", PROJECT_ROOT / "deploy" / "check.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def helm() -> Path:
    check = _check_module()
    return Path(check.go_tool("helm", "helm.sh/helm/v3/cmd/helm", check.HELM_VERSION))


def render(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [str(helm), "template", "mmfeat", str(CHART), "--namespace", "mmfeat", "--kube-version", _check_module().KUBE_VERSION, *args]
    return subprocess.run(cmd, capture_output=True, text=True)


def objects(helm: Path, *args: str) -> dict[tuple[str, str], dict[str, Any]]:
    done = render(helm, *args)
    assert done.returncode == 0, done.stderr
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(done.stdout) if d}


def test_deploy_check_passes() -> None:
    done = subprocess.run([sys.executable, str(PROJECT_ROOT / "deploy" / "check.py")], capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stdout + done.stderr
    summaries = re.findall(r"chart with (values[\w-]*\.yaml): .*kubeconform: (.*)", done.stdout)
    assert {name for name, _ in summaries} == {p.name for p in CHART.glob("values*.yaml")} and len(summaries) == 3
    counts = {}
    for name, summary in summaries:
        valid = re.search(r"Valid: (\d+), Invalid: (\d+), Errors: (\d+), Skipped: (\d+)", summary)
        assert valid and valid.groups()[1:] == ("0", "0", "0"), (name, summary)
        counts[name] = int(valid[1])
    # dev: Triton, worker, profiles (each with its Service) and the ScaledObject; prod adds 3 ServiceMonitors,
    # 3 NetworkPolicies and KEDA's TriggerAuthentication
    assert counts == {"values-dev.yaml": 7, "values.yaml": 14, "values-prod.yaml": 14}
    assert "docker-compose config: ok" in done.stdout and "promtool check config (compose): ok" in done.stdout
    assert "compose: 11 services (3 Kafka nodes)" in done.stdout
    assert "promtool test rules rules.test.yml: ok" in done.stdout


@pytest.mark.parametrize(
    ("edit", "refusal"),
    [
        (lambda c: c["services"]["worker-1"]["environment"].update({"MMFEAT_PROFILES_LOOKUP_TOKEN": "t0ps3cret"}),
         "worker-1 sets ['MMFEAT_PROFILES_LOOKUP_TOKEN'] in the compose file"),
        (lambda c: c["services"]["worker-2"]["environment"].update({"MMFEAT_WORKER_METRICS_PORT": "28999"}),
         "Prometheus scrapes"),
        (lambda c: [c["services"].pop("kafka-3"), c["services"]["topics"]["depends_on"].pop("kafka-3")], "want Kafka nodes 1, 2 and 3"),
        (lambda c: c["services"]["triton"].pop("network_mode"), "services not on the host network: ['triton']"),
    ],
)  # fmt: skip
def test_the_compose_check_refuses_a_stack_that_compose_would_accept(tmp_path: Path, edit: Any, refusal: str) -> None:
    src = PROJECT_ROOT / "deploy" / "compose"
    stack = yaml.safe_load((src / "docker-compose.yml").read_text())
    edit(stack)
    (tmp_path / "docker-compose.yml").write_text(yaml.safe_dump(stack))
    (tmp_path / "prometheus.yml").write_text((src / "prometheus.yml").read_text())
    failures = _check_module().check_compose(tmp_path)
    assert any(refusal in f for f in failures), failures
    assert len(failures) == 1, failures  # compose itself accepts each of them


def test_the_chart_renders_what_operators_rely_on(helm: Path) -> None:
    prod = objects(helm, "-f", str(CHART / "values-prod.yaml"))
    triton = prod[("Deployment", "mmfeat-mmfeat-triton")]["spec"]["template"]["spec"]
    (server,) = triton["containers"]
    assert server["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert server["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert server["resources"]["limits"]["nvidia.com/gpu"] == 1 and triton["tolerations"][0]["key"] == "nvidia.com/gpu"
    scaled = prod[("ScaledObject", "mmfeat-mmfeat-worker")]["spec"]
    assert scaled["maxReplicaCount"] == 12 and scaled["triggers"][0]["metadata"]["topic"] == "media.uploads"
    profiles = prod[("StatefulSet", "mmfeat-mmfeat-profiles")]["spec"]
    assert profiles["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "50Gi"
    env = {e["name"]: e for e in profiles["template"]["spec"]["containers"][0]["env"]}
    assert env["MMFEAT_PROFILES_STANDBY_REPLICAS"]["value"] == "1"
    # credentials come from the Secret, never as a value
    for name in ("MMFEAT_SASL_USERNAME", "MMFEAT_SASL_PASSWORD"):
        assert "value" not in env[name] and env[name]["valueFrom"]["secretKeyRef"]["name"] == "mmfeat-kafka"
    assert env["MMFEAT_PROFILES_LOOKUP_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "mmfeat-profiles-lookup", "key": "lookup-token"}
    assert {k for k, _ in prod} >= {"ServiceMonitor", "NetworkPolicy", "TriggerAuthentication"}
    triton_policy = prod[("NetworkPolicy", "mmfeat-mmfeat-triton")]["spec"]["ingress"][0]
    assert triton_policy["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "worker"

    # the autoscaler's ceiling is the partition count, however high maxReplicas is set
    capped = objects(helm, "--set", "worker.autoscaling.maxReplicas=50", "--set", "topics.uploadsPartitions=6")
    assert capped[("ScaledObject", "mmfeat-mmfeat-worker")]["spec"]["maxReplicaCount"] == 6
    dev = objects(helm, "-f", str(CHART / "values-dev.yaml"))
    assert ("TriggerAuthentication", "mmfeat-mmfeat-kafka") not in dev and ("NetworkPolicy", "mmfeat-mmfeat-triton") not in dev
    assert (
        "nvidia.com/gpu"
        not in dev[("Deployment", "mmfeat-mmfeat-triton")]["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "profiles.replicas=1", "--set", "profiles.standbyReplicas=1"], "needs more profiles.replicas"),
        (["--set", "worker.autoscaling.minReplicas=20"], "minReplicas is above topics.uploadsPartitions"),
        (["--set", "kafka.secretName="], "kafka.secretName is needed with SASL"),
    ],
)
def test_settings_that_cannot_work_are_refused_at_render(helm: Path, args: list[str], message: str) -> None:
    done = render(helm, *args)
    assert done.returncode != 0 and message in done.stderr, done.stderr
