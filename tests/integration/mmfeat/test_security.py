"""Kafka security reaches every client: a broker of this module's own with a SASL_SSL listener (PLAIN and
SCRAM-SHA-256) and a mutual-TLS listener, certificates from a throwaway CA made here. The worker, the admin
client, the reader and the Faust profiles app work through it; refused credentials end each command with one
line instead of a retry loop."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import SecretStr

from mmfeat.cli import services
from mmfeat.cli.produce import image_uploads, send_records, send_uploads
from mmfeat.kafka.client import TopicSpec, ensure_topics
from mmfeat.settings import Settings
from mmfeat.topics import app_topics
from streams.offline import recompute_profiles
from streams.rules import profile_config
from tests.integration.conftest import Stack, by_key, records, run_cli, small_images
from tests.integration.profiles import ProfilesApp, features, item_tokens, send_engagements, wait_converged
from workers.worker import BackgroundWorker

# The embedded broker's properties with its listeners replaced: an INTERNAL one for the broker itself (and our
# readiness probe), SASL_SSL (PLAIN and SCRAM-SHA-256) and SSL with client certificates required.
LISTENERS = {
    "listeners": "INTERNAL://127.0.0.1:{port},SASL_SSL://127.0.0.1:@SASL@,SSL://127.0.0.1:@MTLS@,CONTROLLER://127.0.0.1:{controller}",
    "advertised.listeners": "INTERNAL://127.0.0.1:{port},SASL_SSL://127.0.0.1:@SASL@,SSL://127.0.0.1:@MTLS@",
    "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,INTERNAL:PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL",
    "inter.broker.listener.name": "INTERNAL",
}
SECURITY = """\
sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required \
username="admin" password="admin-secret" user_admin="admin-secret" user_alice="alice-secret";
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PEM
ssl.keystore.location=@DIR@/broker.pem
ssl.truststore.type=PEM
ssl.truststore.location=@DIR@/ca.pem
listener.name.ssl.ssl.client.auth=required
"""


def secured_properties() -> str:
    keys = [line.split("=", 1)[0] for line in services.KAFKA_PROPERTIES.splitlines()]
    lines = [
        f"{k}={LISTENERS[k]}" if k in LISTENERS else line for k, line in zip(keys, services.KAFKA_PROPERTIES.splitlines(), strict=True)
    ]
    return "\n".join(lines) + "\n" + SECURITY


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certs(d: Path) -> None:
    """A CA, a broker certificate for 127.0.0.1 and a client certificate, valid for a day."""
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
            "-subj", "/CN=mmfeat test CA", cwd=d)  # fmt: skip
    for name, san in (("broker", "subjectAltName=IP:127.0.0.1,DNS:localhost"), ("client", "subjectAltName=DNS:mmfeat-client")):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
        (d / f"{name}.ext").write_text(san + "\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", f"{name}.crt",
                "-days", "1", "-extfile", f"{name}.ext", cwd=d)  # fmt: skip
    (d / "broker.pem").write_text((d / "broker.key").read_text() + (d / "broker.crt").read_text())


@dataclass(frozen=True)
class Secured:
    dir: Path
    sasl: str
    mtls: str


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory, stack: Stack) -> Iterator[Secured]:
    d = tmp_path_factory.mktemp("secured")
    make_certs(d)
    sasl, mtls, port, controller = services.free_ports(4)
    plan = services.KafkaPlan(d / "kafka", port, controller)
    props = secured_properties().replace("@SASL@", str(sasl)).replace("@MTLS@", str(mtls)).replace("@DIR@", str(d))
    scram = "SCRAM-SHA-256=[name=bob,password=bob-secret]"
    proc = services.start_kafka(plan, stack.settings.services.cache_dir, properties=props, format_args=["--add-scram", scram])
    try:
        services.wait_until(lambda: services.kafka_ready(plan.bootstrap), "secured broker", proc, 90, plan.dir / "server.log")
        yield Secured(d, f"127.0.0.1:{sasl}", f"127.0.0.1:{mtls}")
    finally:
        services.stop_group(proc.pid, services.KAFKA_MARKERS, log=print, name="secured kafka")


def over(s: Settings, sec: Secured, how: str, **extra: object) -> Settings:
    """``s`` pointed at the secured broker: ``plain`` / ``scram`` over SASL_SSL, or ``mtls``."""
    ca = sec.dir / "ca.pem"
    if how == "mtls":
        update: dict[str, object] = {
            "bootstrap_servers": sec.mtls, "security_protocol": "SSL", "ssl_ca_location": ca,
            "ssl_certificate_location": sec.dir / "client.crt", "ssl_key_location": sec.dir / "client.key",
        }  # fmt: skip
    else:
        user, password, mech = ("alice", "alice-secret", "PLAIN") if how == "plain" else ("bob", "bob-secret", "SCRAM-SHA-256")
        update = {"bootstrap_servers": sec.sasl, "security_protocol": "SASL_SSL", "sasl_mechanism": mech, "sasl_username": user,
                  "sasl_password": SecretStr(password), "ssl_ca_location": ca}  # fmt: skip
    return s.updated(update | extra)


def test_worker_admin_and_reader_work_over_scram_and_mutual_tls(settings: Settings, secured: Secured) -> None:
    s = over(settings, secured, "scram")
    ensure_topics(
        s,
        [
            TopicSpec(t, 2, compacted=t == s.topics.features_topic)
            for t in (s.topics.uploads_topic, s.topics.features_topic, s.topics.deferred_topic, s.topics.dlq_topic)
        ],
    )
    uploads = [u for u, _ in image_uploads(small_images(3, seed=41), inline=True, prefix="sec")]
    send_uploads(s, iter(uploads))
    stats = BackgroundWorker(s, max_records=3, idle_exit_s=60).join(180)
    assert stats.features == 3
    got = by_key(records(over(settings, secured, "mtls"), s.topics.features_topic))  # another listener, a client certificate
    assert set(got) == {u.item_id for u in uploads}


def test_profiles_app_works_over_sasl_ssl(ps: Settings, secured: Secured, tmp_path: Path) -> None:
    s = over(ps, secured, "plain")
    ensure_topics(s, app_topics(s))
    items = item_tokens(6)
    send_records(s, features(s, items))
    send_engagements(s, users=4, items=list(items), n=60, seed=7)
    app = ProfilesApp(s, tmp_path / "profiles.log")
    app.start()
    try:
        wait_converged(app, recompute_profiles(s, profile_config(s)), 150)
    finally:
        app.stop(signal.SIGKILL)


@pytest.mark.parametrize("command", [("tail", "media.uploads", "--timeout", "5"), ("worker", "--idle-exit", "5"), ("profiles",)])
def test_refused_credentials_end_each_command_with_one_line(ps: Settings, secured: Secured, command: tuple[str, ...]) -> None:
    bad = over(ps, secured, "plain", sasl_password=SecretStr("wrong"))
    got = run_cli(bad, *command, timeout_s=120)
    errors = [line for line in got.stderr.splitlines() if line.startswith("error:")]
    assert got.returncode == 1 and len(errors) == 1 and "Traceback" not in got.stderr, got.stderr[-2000:]
    assert "refused" in errors[0] and "wrong" not in got.stderr + got.stdout  # the password is never printed


def test_an_untrusted_broker_certificate_is_refused_in_one_line(ps: Settings, secured: Secured) -> None:
    bad = over(ps, secured, "plain", ssl_ca_location=None)  # the system CAs do not know our throwaway CA
    got = run_cli(bad, "tail", "media.uploads", "--timeout", "5", timeout_s=120)
    errors = [line for line in got.stderr.splitlines() if line.startswith("error:")]
    assert got.returncode == 1 and len(errors) == 1 and "Traceback" not in got.stderr, got.stderr[-2000:]
