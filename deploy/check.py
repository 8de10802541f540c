"""`make deploy-check`: every static validation of deploy/, offline once its tools are cached.

- the Helm chart rendered with each values file (`helm template`) and every object validated by kubeconform,
  strict, against the Kubernetes schemas and the KEDA and prometheus-operator CRDs;
- Prometheus: `promtool check config`, `check rules` and the rules' unit tests;
- the compose stack: `docker-compose config`, and what it must hold whatever compose accepts: three Kafka nodes,
  every service on the host network, no secret in its text (they come from the env file), Prometheus scraping
  exactly the ports the services listen on, and every file the Dockerfiles copy present in the build context.

helm and kubeconform are built once with `go install` through the Go module proxy. The Kubernetes JSON schemas
come from PyPI's kubernetes-validate wheel, and the CRDs from the KEDA and prometheus-operator Go modules. All of
them are cached under ~/.cache/mmfeat/deploy, and nothing is fetched at validation time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "deploy" / "helm" / "mmfeat"
HELM_VERSION = "v3.22.0"
KUBECONFORM_VERSION = "v0.8.0"
KUBE_VALIDATE = "1.37.0"  # the PyPI wheel with the schemas
KUBE_VERSION = "1.33.0"  # the Kubernetes version the chart is validated against
CRD_MODULES = {
    # module@version: CRD files inside it
    "github.com/kedacore/keda/v2@v2.21.0": [
        "config/crd/bases/keda.sh_scaledobjects.yaml",
        "config/crd/bases/keda.sh_triggerauthentications.yaml",
    ],
    "github.com/prometheus-operator/prometheus-operator@v0.85.0": [
        "example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml"
    ],
}


def cache_dir() -> Path:
    return Path(os.environ.get("MMFEAT_CACHE_DIR", Path.home() / ".cache" / "mmfeat")) / "deploy"


def run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def go_tool(name: str, package: str, version: str) -> Path:
    """``name`` built from ``package@version`` into the cache, once."""
    bin_dir = cache_dir() / "bin" / version
    exe = bin_dir / name
    if exe.exists():
        return exe
    if shutil.which("go") is None:
        sys.exit(f"deploy-check: `go` is needed once to build {name} (the Go module proxy serves it)")
    print(f"deploy-check: building {name} {version} with go install (once) ...", flush=True)
    proc = run(["go", "install", f"{package}@{version}"], env={**os.environ, "GOBIN": str(bin_dir), "CGO_ENABLED": "0"})
    if proc.returncode != 0:
        sys.exit(f"deploy-check: go install {package}@{version} failed: {proc.stderr.strip()[-800:]}")
    return exe


def kube_schemas() -> Path:
    """Standalone JSON schemas of every Kubernetes kind, named as kubeconform looks them up."""
    out = cache_dir() / "schemas" / f"v{KUBE_VERSION}-standalone-strict"
    if (out / "deployment-apps-v1.json").exists():
        return out
    wheel_dir = cache_dir() / "wheels"
    wheel = wheel_dir / f"kubernetes_validate-{KUBE_VALIDATE}-py3-none-any.whl"
    if not wheel.exists():
        proc = run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(wheel_dir), f"kubernetes-validate=={KUBE_VALIDATE}"]
        )
        if proc.returncode != 0:
            sys.exit(f"deploy-check: cannot fetch kubernetes-validate {KUBE_VALIDATE}: {proc.stderr.strip()[-500:]}")
    prefix = f"kubernetes_validate/kubernetes-json-schema/v{KUBE_VERSION}-local-strict/"
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with zipfile.ZipFile(wheel) as z:
        names = [n for n in z.namelist() if n.startswith(prefix) and n.endswith(".json")]
        defs = json.loads(z.read(prefix + "_definitions.json"))["$defs"] if prefix + "_definitions.json" in names else None
        if defs is None:
            defs = json.loads(z.read(f"kubernetes_validate/kubernetes-json-schema/v{KUBE_VERSION}-local/_definitions.json"))["$defs"]
        for name in names:
            base = name.removeprefix(prefix)
            if base.startswith("_"):
                continue
            schema = json.loads(z.read(name))
            (tmp / base).write_text(json.dumps(standalone(schema, defs)))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def standalone(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """The schema with the shared definitions it reaches inlined under its own ``$defs`` (kubeconform reads one file)."""
    ref = re.compile(r'"\$ref": "/api/_definitions\.json#/\$defs/([^"]+)"')
    inner = re.compile(r'"\$ref": "(?:/api/_definitions\.json)?#/\$defs/([^"]+)"')  # the definitions refer to each other locally
    wanted: set[str] = set()
    todo = set(ref.findall(json.dumps(schema)))
    while todo:
        name = todo.pop()
        if name in wanted:
            continue
        wanted.add(name)
        todo |= set(inner.findall(json.dumps(defs[name]))) - wanted
    # no $id: with one, the validator resolved "#/$defs/..." against kubernetes.io, and the kind read as unknown
    own = {k: v for k, v in schema.items() if k != "$id"}
    text = ref.sub(r'"$ref": "#/$defs/\1"', json.dumps({**own, "$defs": {n: defs[n] for n in sorted(wanted)}}))
    return dict(json.loads(text))


def crd_schemas() -> Path:
    """JSON schemas of the CRDs the chart uses, ``<group>/<kind>_<version>.json`` (kubeconform's CRD layout)."""
    out = cache_dir() / "schemas" / "crds"
    done = out / ".done"
    if done.exists() and done.read_text() == json.dumps(CRD_MODULES):
        return out
    for module, files in CRD_MODULES.items():
        proc = run(["go", "mod", "download", "-json", module], env={**os.environ, "GOFLAGS": "-mod=mod"})
        if proc.returncode != 0:
            sys.exit(f"deploy-check: go mod download {module} failed: {proc.stdout.strip()[-500:]} {proc.stderr.strip()[-500:]}")
        src = Path(json.loads(proc.stdout)["Dir"])
        for rel in files:
            crd = yaml.safe_load((src / rel).read_text())
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"].lower()
            for v in crd["spec"]["versions"]:
                schema = strict(v["schema"]["openAPIV3Schema"])
                (out / group).mkdir(parents=True, exist_ok=True)
                (out / group / f"{kind}_{v['name']}.json").write_text(json.dumps(schema))
    done.write_text(json.dumps(CRD_MODULES))
    return out


def strict(schema: Any) -> Any:
    """An OpenAPI v3 CRD schema as JSON Schema: ``nullable`` honoured, and no property beyond those declared
    where the CRD lists them (kubeconform's -strict for CRDs, as openapi2jsonschema does)."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items() if not k.startswith("x-kubernetes-")}
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    if "properties" in out and "additionalProperties" not in out and not schema.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


def check_chart(helm: Path, kubeconform: Path, kube: Path, crds: Path) -> list[str]:
    failures = []
    for values in sorted(CHART.glob("values*.yaml")):
        args = [] if values.name == "values.yaml" else ["-f", str(values)]
        rendered = run([str(helm), "template", "mmfeat", str(CHART), "--namespace", "mmfeat", "--kube-version", KUBE_VERSION, *args])
        if rendered.returncode != 0:
            failures.append(f"helm template ({values.name}): {rendered.stderr.strip()}")
            continue
        kinds = sorted({d["kind"] for d in yaml.safe_load_all(rendered.stdout) if d})
        checked = run(
            [str(kubeconform), "-strict", "-summary", "-output", "text", "-kubernetes-version", KUBE_VERSION,
             "-schema-location", f"{kube}/{{{{ .ResourceKind }}}}{{{{ .KindSuffix }}}}.json",
             "-schema-location", f"{crds}/{{{{ .Group }}}}/{{{{ .ResourceKind }}}}_{{{{ .ResourceAPIVersion }}}}.json", "-"],
            input=rendered.stdout,
        )  # fmt: skip
        summary = (checked.stdout.strip().splitlines() or ["(no output)"])[-1]
        print(f"chart with {values.name}: {', '.join(kinds)}; kubeconform: {summary}")
        if checked.returncode != 0 or "Skipped: 0" not in summary:
            failures.append(f"kubeconform ({values.name}): {checked.stdout.strip()} {checked.stderr.strip()}")
    return failures


def check_prometheus() -> list[str]:
    promtool = shutil.which("promtool")
    if promtool is None:
        return ["promtool not found (Debian's prometheus package: make sysdeps)"]
    failures = []
    here = ROOT / "deploy" / "prometheus"
    for args in (["check", "config", "prometheus.yml"], ["check", "rules", "rules.yml"], ["test", "rules", "rules.test.yml"]):
        proc = run([promtool, *args], cwd=here)
        print(f"promtool {' '.join(args)}: {'ok' if proc.returncode == 0 else 'FAILED'}")
        if proc.returncode != 0:
            failures.append(f"promtool {' '.join(args)}: {proc.stdout.strip()} {proc.stderr.strip()}")
    return failures


COMPOSE = ROOT / "deploy" / "compose"
SECRET_NAMES = re.compile(r"TOKEN|PASSWORD|SECRET|SASL_USERNAME|KEY_LOCATION", re.IGNORECASE)


def compose_ports(services: dict[str, Any]) -> set[str]:
    """The /metrics addresses the compose services listen on (workers, profiles web ports, Triton's metrics)."""
    ports = set()
    for svc in services.values():
        env = svc.get("environment") or {}
        for key in ("MMFEAT_WORKER_METRICS_PORT", "MMFEAT_PROFILES_WEB_PORT"):
            if key in env:
                ports.add(f"127.0.0.1:{env[key]}")
        for arg in svc.get("command") or []:
            if str(arg).startswith("--metrics-port="):
                ports.add(f"127.0.0.1:{str(arg).split('=', 1)[1]}")
    return ports


def check_compose(where: Path = COMPOSE) -> list[str]:
    """deploy/compose (or a copy of it in ``where``)."""
    failures = []
    compose = shutil.which("docker-compose")
    env = {**os.environ, "MMFEAT_SECRETS_ENV": str(COMPOSE / "secrets.env.example")}
    if compose is None:
        failures.append("docker-compose not found (Debian's docker-compose package: make sysdeps)")
    else:
        proc = run([compose, "-f", str(where / "docker-compose.yml"), "config", "-q"], env=env)
        print(f"docker-compose config: {'ok' if proc.returncode == 0 else 'FAILED'}")
        if proc.returncode != 0:
            failures.append(f"docker-compose config: {proc.stderr.strip()}")
    text = (where / "docker-compose.yml").read_text()
    services: dict[str, Any] = yaml.safe_load(text)["services"]
    kafka = sorted(n for n, svc in services.items() if str(svc.get("image", "")).startswith("mmfeat/kafka:"))
    if [services[n]["command"] for n in kafka] != [["1"], ["2"], ["3"]]:
        failures.append(f"compose: want Kafka nodes 1, 2 and 3, got {kafka}")
    if off := sorted(n for n, svc in services.items() if svc.get("network_mode") != "host"):
        failures.append(f"compose: services not on the host network: {off}")
    for n, svc in services.items():
        if leaked := sorted(k for k in svc.get("environment") or {} if SECRET_NAMES.search(k)):
            failures.append(f"compose: {n} sets {leaked} in the compose file: secrets belong in the env file")
    jobs = yaml.safe_load((where / "prometheus.yml").read_text())["scrape_configs"]
    scraped = {t for job in jobs for c in job["static_configs"] for t in c["targets"]}
    if scraped != compose_ports(services):
        failures.append(f"compose: Prometheus scrapes {sorted(scraped)}, the services listen on {sorted(compose_ports(services))}")
    promtool = shutil.which("promtool")
    if promtool is not None:
        with tempfile.TemporaryDirectory() as tmp:  # the rules are mounted beside the config in the container
            shutil.copy(where / "prometheus.yml", tmp)
            shutil.copy(ROOT / "deploy" / "prometheus" / "rules.yml", tmp)
            proc = run([promtool, "check", "config", "prometheus.yml"], cwd=tmp)
        print(f"promtool check config (compose): {'ok' if proc.returncode == 0 else 'FAILED'}")
        if proc.returncode != 0:
            failures.append(f"promtool check config (compose): {proc.stdout.strip()} {proc.stderr.strip()}")
    for dockerfile in sorted((ROOT / "deploy" / "docker").glob("Dockerfile*")):
        for line in dockerfile.read_text().splitlines():
            if line.startswith("COPY "):
                missing = [src for src in line.split()[1:-1] if not (ROOT / src).exists()]
                if missing:
                    failures.append(f"{dockerfile.name}: COPY of {missing}, which the checkout does not have")
    print(f"compose: {len(services)} services ({len(kafka)} Kafka nodes); Dockerfiles' sources present")
    return failures


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    helm = go_tool("helm", "helm.sh/helm/v3/cmd/helm", HELM_VERSION)
    kubeconform = go_tool("kubeconform", "github.com/yannh/kubeconform/cmd/kubeconform", KUBECONFORM_VERSION)
    failures = check_chart(helm, kubeconform, kube_schemas(), crd_schemas()) + check_prometheus() + check_compose()
    for f in failures:
        print(f"deploy-check: {f}", file=sys.stderr)
    if failures:
        sys.exit(1)
    print("deploy-check: all passed")


if __name__ == "__main__":
    main()
