"""`make compose-test`: the compose stack end to end on this machine's Docker daemon.

Builds the images (cached, deploy/docker/build.sh), brings deploy/compose/docker-compose.yml up under a project
name of its own, sends uploads and engagements from this host (the stack uses the host's network), then checks:
every upload has exactly one feature record and none is dead-lettered; half the engagements go in while a Kafka
node is SIGKILLed, half after it is started again; both profiles workers answer every user with the profile
recomputed offline from the topics (streams/offline.py, the same rule); Prometheus scrapes every target. It takes
the stack down (volumes too) whatever happened, and writes results/compose-test.json.

    python deploy/compose_test.py [--keep] [--uploads N] [--engagements N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mmfeat.cli.produce import engagement_records, send_records, send_uploads, synthetic_engagements, synthetic_uploads  # noqa: E402
from mmfeat.cli.services import kafka_ready  # noqa: E402
from mmfeat.kafka.reader import read_topic  # noqa: E402
from mmfeat.settings import Settings, load_settings  # noqa: E402
from streams.client import served_mismatches  # noqa: E402
from streams.offline import recompute_profiles  # noqa: E402
from streams.rules import profile_config  # noqa: E402

COMPOSE = ROOT / "deploy" / "compose" / "docker-compose.yml"
PROJECT = "mmfeat-compose-test"
BOOTSTRAP = "127.0.0.1:29092,127.0.0.1:29192,127.0.0.1:29292"  # the compose file's nodes
PROFILES = ("http://127.0.0.1:28201", "http://127.0.0.1:28202")
PROMETHEUS = "http://127.0.0.1:29090"
TARGETS = 5  # two workers, two profiles workers, Triton


def step(what: str) -> Callable[[str], None]:
    t0 = time.monotonic()
    print(f"· {what} ...", flush=True)
    return lambda result: print(f"  {result} ({time.monotonic() - t0:.0f} s)", flush=True)


def compose(env: dict[str, str], *args: str, check: bool = True, capture: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker-compose", "-p", PROJECT, "-f", str(COMPOSE), *args], env=env, check=check, text=True, capture_output=capture
    )


def wait(cond: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if cond():
                return
        except Exception:  # a service still starting answers with errors: that is "not yet"
            pass
        time.sleep(2)
    raise SystemExit(f"compose-test: timed out after {timeout_s:.0f} s waiting for {what}")


def prometheus_up() -> int:
    url = f"{PROMETHEUS}/api/v1/query?" + urllib.parse.urlencode({"query": "sum(up)"})
    with urllib.request.urlopen(url, timeout=5) as r:
        got = json.loads(r.read())["data"]["result"]
    return int(float(got[0]["value"][1])) if got else 0


def check_features(s: Settings, items: set[str]) -> dict[str, int]:
    got = Counter(r.key for r in read_topic(s, s.topics.features_topic, timeout_s=5))
    dlq = [r.key for r in read_topic(s, s.topics.dlq_topic, timeout_s=5)]
    return {"uploads": len(items), "with_features": len(items & set(got)), "duplicates": sum(n - 1 for n in got.values()), "dlq": len(dlq)}


def profile_mismatches(s: Settings, token: str) -> list[str]:
    return served_mismatches(PROFILES, recompute_profiles(s, profile_config(s)), token)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--uploads", type=int, default=40)
    ap.add_argument("--engagements", type=int, default=400)
    ap.add_argument("--keep", action="store_true", help=f"leave the stack running (docker-compose -p {PROJECT} down -v ends it)")
    args = ap.parse_args()
    for tool in ("docker", "docker-compose"):
        if shutil.which(tool) is None:
            raise SystemExit(f"compose-test: {tool} is missing (apt-get install docker.io docker-compose)")
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        raise SystemExit("compose-test: no Docker daemon answers (here: dockerd --iptables=false --bridge=none &)")
    began = time.monotonic()
    done = step("images (deploy/docker/build.sh)")
    subprocess.run([str(ROOT / "deploy" / "docker" / "build.sh")], check=True)
    done("built or cached")
    build_s = time.monotonic() - began

    token = os.urandom(16).hex()
    secrets = Path(tempfile.mkdtemp()) / "secrets.env"
    secrets.write_text(f"MMFEAT_PROFILES_LOOKUP_TOKEN={token}\n")
    env = {**os.environ, "MMFEAT_SECRETS_ENV": str(secrets)}
    s = load_settings(bootstrap_servers=BOOTSTRAP)
    result: dict[str, object] = {
        "command": " ".join(sys.argv),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": platform.node(),
    }
    ok = False
    try:
        compose(env, "down", "-v", check=False, capture=True)  # what a killed run left
        done = step("docker-compose up (3 Kafka nodes, Triton, 2 workers, 2 profiles workers, Prometheus)")
        up_t0 = time.monotonic()
        compose(env, "up", "-d")
        wait(lambda: prometheus_up() == TARGETS, 600, "every service to answer Prometheus's scrape")
        result["up_s"] = round(time.monotonic() - up_t0, 1)
        done("every service up")

        done = step(f"{args.uploads} uploads, {args.engagements} engagements")
        items = {u.item_id for u in synthetic_uploads(args.uploads, seed=7, prefix="compose")}
        send_uploads(s, synthetic_uploads(args.uploads, seed=7, prefix="compose"))
        wait(lambda: check_features(s, items)["with_features"] == len(items), 600, "a feature record of every upload")
        features = check_features(s, items)
        result["features"] = features
        done(f"features: {features}")

        # half the engagements with a node SIGKILLed (replication 3, min ISR 2: writes go on), half after it rejoined
        done = step(f"{args.engagements} engagements, kafka-2 SIGKILLed for the first half")
        users = [f"u{i}" for i in range(20)]
        start = datetime.now(UTC) - timedelta(seconds=args.engagements)
        every = list(engagement_records(s, synthetic_engagements(users, sorted(items), args.engagements, seed=3, start=start)))
        compose(env, "kill", "-s", "SIGKILL", "kafka-2", capture=True)
        send_records(s, every[: len(every) // 2])
        compose(env, "start", "kafka-2", capture=True)
        send_records(s, every[len(every) // 2 :])
        wait(lambda: kafka_ready("127.0.0.1:29192"), 120, "kafka-2 to answer again")
        done("sent; kafka-2 back")

        done = step("profiles on both workers against the offline recomputation")
        last: list[str] = []

        def converged() -> bool:
            nonlocal last
            last = profile_mismatches(s, token)
            return not last

        try:
            wait(converged, 300, "both profiles workers to answer every user's recomputed profile")
        except SystemExit:
            print("\n".join(last[:10]))
            raise
        done(f"{len(users)} users x {len(PROFILES)} workers equal the recomputation")
        result["profiles_users"] = len(users)
        ok = features["duplicates"] == 0 and features["dlq"] == 0
    finally:
        if not ok:
            logs = compose(env, "logs", "--tail", "30", check=False, capture=True)
            print(logs.stdout[-6000:])
        if not args.keep:
            done = step("docker-compose down -v")
            compose(env, "down", "-v", check=False, capture=True)
            done("down")
        secrets.unlink()
    result |= {"ok": ok, "build_s": round(build_s, 1), "total_s": round(time.monotonic() - began, 1)}
    out = ROOT / "results" / "compose-test.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"compose-test: {'passed' if ok else 'FAILED'} in {result['total_s']:.0f} s (images {build_s:.0f} s); {out.relative_to(ROOT)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
