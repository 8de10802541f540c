"""The embedded Apache Kafka 4.x broker (KRaft), resolved from Maven Central into the cache and run with Java."""

from __future__ import annotations

import base64
import shutil
import subprocess
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mmfeat.cli.services.processes import _port_open, _run
from mmfeat.errors import ServiceError
from mmfeat.kafka.client import min_insync
from mmfeat.settings import PROJECT_ROOT

KAFKA_VERSION = "4.1.1"
KAFKA_POM = PROJECT_ROOT / "deploy" / "kafka" / "pom.xml"

KAFKA_PROPERTIES = """\
process.roles=broker,controller
node.id={node_id}
{quorum}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs={data}
num.partitions=4
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
message.max.bytes=16777216
log.cleaner.min.compaction.lag.ms=0
log.segment.bytes=67108864
"""

LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka.server.KafkaRaftServer
logger.kafka.level = INFO
"""
LOG4J2_CONSOLE = LOG4J2.replace("appender.file.type = File", "appender.file.type = Console").replace("appender.file.fileName = {log}\n", "")


def kafka_libs(cache_dir: Path) -> Path:
    """The broker's jars, resolved once from Maven Central into the cache (about 40 jars, 10 s)."""
    libs = cache_dir / f"kafka-{KAFKA_VERSION}" / "libs"
    if (libs / f"kafka_2.13-{KAFKA_VERSION}.jar").exists():
        return libs
    if shutil.which("mvn") is None:
        raise ServiceError("Maven (mvn) is needed once to fetch the Kafka jars; install it (apt-get install maven)")
    tmp = libs.with_name("libs.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    _run(
        [
            "mvn",
            "-q",
            "-B",
            "-f",
            str(KAFKA_POM),
            "dependency:copy-dependencies",
            f"-Dkafka.version={KAFKA_VERSION}",
            f"-DoutputDirectory={tmp}",
            "-DincludeScope=runtime",
        ],
        "resolving the Kafka jars from Maven Central",
    )
    tmp.rename(libs)
    return libs


# A cluster's nodes: every topic (and the offsets and transaction topics) on three of them, a write acknowledged
# by two. Later keys of a properties file win, so these follow the single-node template.
CLUSTER_PROPERTIES = """\
default.replication.factor={replicas}
min.insync.replicas={min_isr}
offsets.topic.replication.factor={replicas}
transaction.state.log.replication.factor={replicas}
transaction.state.log.min.isr={min_isr}
share.coordinator.state.topic.replication.factor={replicas}
share.coordinator.state.topic.min.isr={min_isr}
"""
NODE_PORT_STEP = 100  # node i (from 1) of a cluster listens on the configured ports + 100 * (i - 1)


@dataclass(frozen=True)
class KafkaPlan:
    """One KRaft node (broker and controller in one process). A single node is its own quorum (``voters``
    empty, storage formatted ``--standalone``); a cluster's nodes name every controller in ``voters``."""

    dir: Path
    port: int
    controller_port: int
    node_id: int = 1
    voters: tuple[tuple[int, int], ...] = ()  # (node id, controller port) of every node of a cluster
    cluster_id: str = ""

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def properties(self, template: str = KAFKA_PROPERTIES) -> str:
        if self.voters:
            quorum = "controller.quorum.voters=" + ",".join(f"{n}@127.0.0.1:{c}" for n, c in self.voters)
        else:
            quorum = f"controller.quorum.bootstrap.servers=127.0.0.1:{self.controller_port}"
        text = template.format(port=self.port, controller=self.controller_port, data=self.dir / "data", node_id=self.node_id, quorum=quorum)
        if self.voters:
            replicas = min(3, len(self.voters))
            text += CLUSTER_PROPERTIES.format(replicas=replicas, min_isr=min_insync(replicas))
        return text


def cluster_plans(base: Path, port: int, controller_port: int, nodes: int, cluster_id: str | None = None) -> list[KafkaPlan]:
    """``nodes`` == 1: the single node of before, in ``base``; more: node i in ``base/node-i`` on the ports + 100 * (i - 1),
    one cluster id for all: ``cluster_id``, or one kept in ``base/cluster.id`` so a restarted node joins the same cluster."""
    if nodes == 1:
        return [KafkaPlan(base, port, controller_port, cluster_id=cluster_id or "")]
    id_file = base / "cluster.id"
    if not cluster_id:
        if not id_file.exists():
            base.mkdir(parents=True, exist_ok=True)
            id_file.write_text(new_cluster_id())
        cluster_id = id_file.read_text().strip()
    ports = [(i, port + NODE_PORT_STEP * (i - 1), controller_port + NODE_PORT_STEP * (i - 1)) for i in range(1, nodes + 1)]
    voters = tuple((i, c) for i, _, c in ports)
    return [KafkaPlan(base / f"node-{i}", p, c, i, voters, cluster_id) for i, p, c in ports]


def new_cluster_id() -> str:
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def kafka_command(
    plan: KafkaPlan, cache_dir: Path, *, properties: str = KAFKA_PROPERTIES, format_args: Sequence[str] = (), console: bool = False
) -> list[str]:
    """Write the node's configuration, format its KRaft storage on first use, and return the command that runs it;
    the broker logs to files in its folder, or to stdout (``console``: a container's one process).

    ``properties`` is a template of server.properties (``{port}``, ``{controller}``, ``{data}``, ``{node_id}``,
    ``{quorum}``); ``format_args`` go to the storage format (say, ``--add-scram`` credentials of a secured test broker)."""
    libs = kafka_libs(cache_dir)
    plan.dir.mkdir(parents=True, exist_ok=True)
    data = plan.dir / "data"
    props = plan.dir / "server.properties"
    props.write_text(plan.properties(properties))
    log4j = plan.dir / "log4j2.properties"
    log4j.write_text(LOG4J2_CONSOLE if console else LOG4J2.format(log=plan.dir / "server.log"))
    # A fixed heap, Kafka's own default (kafka-server-start.sh: -Xmx1G -Xms1G), touched at start: a node's memory is
    # then what it takes from its first second (what a container's limit must hold anyway), where a heap grown on
    # demand stepped up by a third after 25 minutes of a soak and read as growth.
    java = ["java", "-Xms1g", "-Xmx1g", "-XX:+AlwaysPreTouch", f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{libs}/*"]
    if not (data / "meta.properties").exists():
        # "--cluster-id=ID", not "-t ID": a urlsafe id may start with "-" and then reads as an option (1 start in 64 failed).
        # A cluster's static voters need no quorum flag; a single node is formatted as its own quorum.
        quorum = [] if plan.voters else ["--standalone"]
        cluster_id = plan.cluster_id or new_cluster_id()
        _run(
            [*java, "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "-c", str(props), *quorum, *format_args],
            f"formatting Kafka storage (node {plan.node_id})",
        )
    return [*java, "kafka.Kafka", str(props)]


def start_kafka(
    plan: KafkaPlan, cache_dir: Path, *, properties: str = KAFKA_PROPERTIES, format_args: Sequence[str] = ()
) -> subprocess.Popen[bytes]:
    """Start the node (``kafka_command``) detached from our process group."""
    cmd = kafka_command(plan, cache_dir, properties=properties, format_args=format_args)
    out = open(plan.dir / "stdout.log", "ab")  # noqa: SIM115 - handed to the child
    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def kafka_ready(bootstrap: str, timeout_s: float = 2.0) -> bool:
    from confluent_kafka.admin import AdminClient

    host, _, port = bootstrap.split(",")[0].rpartition(":")
    if host in ("127.0.0.1", "localhost") and not _port_open(int(port)):
        return False  # not listening yet: no client, so no librdkafka connect errors on stderr
    try:
        AdminClient({"bootstrap.servers": bootstrap, "log_level": 0}).list_topics(timeout=timeout_s)
        return True
    except Exception:
        return False
