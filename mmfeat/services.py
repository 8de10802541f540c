"""The embedded default services: a real Kafka 4.x broker (KRaft) and a real Triton server.

`mmfeat up` starts what is not already running or named by MMFEAT_BOOTSTRAP_SERVERS /
MMFEAT_TRITON_URL, waits until each is ready and records pids and endpoints under the state
directory; `mmfeat down` stops exactly the processes recorded there. docs/services.md records
what was learned about starting both on a machine without Docker or a GPU.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mmfeat.errors import ServiceError
from mmfeat.settings import PROJECT_ROOT, Settings

Log = Callable[[str], object]
KAFKA_VERSION = "4.1.1"
KAFKA_POM = PROJECT_ROOT / "deploy" / "kafka" / "pom.xml"
ENDPOINTS = "endpoints.json"
PORT_SETTINGS = (
    "kafka_port",
    "kafka_controller_port",
    "triton_http_port",
    "triton_grpc_port",
    "triton_metrics_port",
    "worker_metrics_port",
    "backfill_metrics_port",
)

KAFKA_PROPERTIES = """\
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:{controller}
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _run(cmd: Sequence[str], what: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
        raise ServiceError(f"{what} failed (exit {proc.returncode}): {' | '.join(tail)}")


# ---- Kafka -----------------------------------------------------------------------------------


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


@dataclass(frozen=True)
class KafkaPlan:
    dir: Path
    port: int
    controller_port: int

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"


def start_kafka(
    plan: KafkaPlan, cache_dir: Path, *, properties: str = KAFKA_PROPERTIES, format_args: Sequence[str] = ()
) -> subprocess.Popen[bytes]:
    """Format KRaft storage on first use and start the broker detached from our process group.

    ``properties`` is a template of server.properties (``{port}``, ``{controller}``, ``{data}``); ``format_args``
    go to the storage format (say, ``--add-scram`` credentials of a secured test broker)."""
    libs = kafka_libs(cache_dir)
    plan.dir.mkdir(parents=True, exist_ok=True)
    data = plan.dir / "data"
    props = plan.dir / "server.properties"
    props.write_text(properties.format(port=plan.port, controller=plan.controller_port, data=data))
    log4j = plan.dir / "log4j2.properties"
    log4j.write_text(LOG4J2.format(log=plan.dir / "server.log"))
    java = ["java", "-Xms256m", "-Xmx1g", f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{libs}/*"]
    if not (data / "meta.properties").exists():
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        # "--cluster-id=ID", not "-t ID": a urlsafe id may start with "-" and then reads as an option (1 start in 64 failed).
        _run(
            [*java, "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "-c", str(props), "--standalone", *format_args],
            "formatting Kafka storage",
        )
    out = open(plan.dir / "stdout.log", "ab")  # noqa: SIM115 - handed to the child
    return subprocess.Popen([*java, "kafka.Kafka", str(props)], stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


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


# ---- Triton ----------------------------------------------------------------------------------


def _pytriton_dir() -> Path:
    try:
        import pytriton
    except ImportError as e:
        raise ServiceError("nvidia-pytriton is not installed in this environment; run `make venv`") from e
    return Path(pytriton.__file__).parent


def triton_backend_dir(cache_dir: Path) -> Path:
    """A backend folder: the wheel's python backend plus the stub built for this interpreter."""
    src = _pytriton_dir() / "tritonserver"
    pyver = f"{sys.version_info.major}.{sys.version_info.minor}"
    dst = cache_dir / f"triton-backends-py{pyver}"
    python = dst / "python"
    if not (python / "triton_python_backend_stub").exists():
        python.mkdir(parents=True, exist_ok=True)
        for f in (src / "backends" / "python").iterdir():
            if f.is_file():
                shutil.copy2(f, python / f.name)
        shutil.copy2(src / "python_backend_stubs" / pyver / "triton_python_backend_stub", python / "triton_python_backend_stub")
    return dst


def triton_env() -> dict[str, str]:
    """Environment for tritonserver and its Python stub.

    LD_LIBRARY_PATH must name this interpreter's LIBDIR first: otherwise the stub loads Debian's
    libpython and dies with "'_thread.RLock' object has no attribute '_recursion_count'".
    """
    env = dict(os.environ)
    libdir = str(sysconfig.get_config_var("LIBDIR"))
    libs = str(_pytriton_dir().parent / "nvidia_pytriton.libs")
    env["LD_LIBRARY_PATH"] = ":".join(p for p in (libdir, libs, env.get("LD_LIBRARY_PATH", "")) if p)
    venv = Path(sys.prefix)
    env["VIRTUAL_ENV"] = str(venv)
    env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '')}"
    site = sysconfig.get_paths()["purelib"]
    env["PYTHONPATH"] = ":".join(p for p in (str(PROJECT_ROOT), site, env.get("PYTHONPATH", "")) if p)
    env.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    return env


@dataclass(frozen=True)
class TritonPlan:
    dir: Path
    model_repositories: tuple[Path, ...]
    http_port: int
    grpc_port: int
    metrics_port: int

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"


def start_triton(plan: TritonPlan, cache_dir: Path) -> subprocess.Popen[bytes]:
    binary = _pytriton_dir() / "tritonserver" / "bin" / "tritonserver"
    plan.dir.mkdir(parents=True, exist_ok=True)
    cmd = [str(binary)]
    for repo in plan.model_repositories:
        cmd += ["--model-repository", str(Path(repo).resolve())]
    cmd += [
        "--backend-directory", str(triton_backend_dir(cache_dir)),
        "--http-address", "127.0.0.1", "--http-port", str(plan.http_port),
        "--grpc-address", "127.0.0.1", "--grpc-port", str(plan.grpc_port),
        "--metrics-port", str(plan.metrics_port),
        "--allow-metrics", "true", "--strict-readiness", "true", "--exit-on-error", "true",
        # explicit: every model in the repositories loads at start, and `mmfeat backfill --captioner DIR`
        # can load another captioner beside them through the repository API.
        "--model-control-mode", "explicit", "--load-model", "*",
        "--log-verbose", "0",
    ]  # fmt: skip
    out = open(plan.dir / "tritonserver.log", "ab")  # noqa: SIM115 - handed to the child
    # cwd: the Python backend stub finds `mmfeat` through its working directory, not PYTHONPATH, so `mmfeat up`
    # run from outside the checkout would serve nothing (ModuleNotFoundError in the stub)
    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=triton_env(), start_new_session=True, cwd=PROJECT_ROOT)


def triton_ready(http_url: str, model: str | None = None, timeout_s: float = 2.0) -> bool:
    path = f"/v2/models/{model}/ready" if model else "/v2/health/ready"
    try:
        with urllib.request.urlopen(f"http://{http_url}{path}", timeout=timeout_s) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError):
        return False


# ---- process bookkeeping ---------------------------------------------------------------------


def wait_until(ready: Callable[[], bool], what: str, proc: subprocess.Popen[bytes] | None, timeout_s: float, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ready():
            return
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-5:] if log.exists() else []
            raise ServiceError(f"{what} exited with code {proc.returncode} during start-up; {log}: {' | '.join(tail)}")
        time.sleep(0.5)
    raise ServiceError(f"{what} not ready after {timeout_s:.0f}s; see {log}")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ")[-1].startswith("Z"))


def _runs(pid: int, *markers: str) -> bool:
    """Whether ``pid`` is still a process we started (pids are reused): its command line names a marker."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    return any(m in cmdline for m in markers)


TRITON_MARKERS = ("tritonserver", "triton_python_backend_stub")
KAFKA_MARKERS = ("kafka.Kafka",)


def group_members(pgid: int, markers: Sequence[str]) -> list[int]:
    """Live processes of process group ``pgid`` whose command line names one of ``markers``.

    A group outlives its leader: after a kill -9 of tritonserver its Python backend stub (about 1 GiB) runs on
    in the group. Linux does not hand out a pid that is still some group's id, and the marker check keeps an
    unrelated group that later got the same id safe."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z" and _runs(int(stat.parent.name), *markers):
                out.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return sorted(out)


def stop_group(pgid: int, markers: Sequence[str], timeout_s: float = 20.0, log: Log = print, name: str = "") -> bool:
    """Stop every process of the group we started (the leader gracefully first, then what is left, SIGKILL last).
    Returns whether there was anything to stop."""
    members = group_members(pgid, markers)
    if not members:
        return False
    log(f"{name or 'group'}: stopping pid {pgid} and its process group ({len(members)} process(es))")
    if pgid in members:
        _signal_wait([pgid], signal.SIGTERM, timeout_s)
    for sig, wait_s in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        left = group_members(pgid, markers)
        if not left:
            break
        _signal_wait(left, sig, wait_s)
    return True


def _signal_wait(pids: Sequence[int], sig: int, timeout_s: float) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
        time.sleep(0.2)


def stop_pid(pid: int, timeout_s: float = 20.0) -> None:
    """SIGTERM the process group we started, then SIGKILL whatever is left after ``timeout_s``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return
            time.sleep(0.2)


@dataclass
class Endpoints:
    bootstrap_servers: str | None = None
    triton_url: str | None = None
    triton_http: str | None = None
    kafka_pid: int | None = None
    triton_pid: int | None = None

    @classmethod
    def load(cls, state_dir: Path) -> Endpoints:
        path = state_dir / ENDPOINTS
        return cls(**json.loads(path.read_text())) if path.exists() else cls()

    def save(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        (state_dir / ENDPOINTS).write_text(json.dumps(self.__dict__, indent=2))


def resolve(settings: Settings) -> Settings:
    """Fill in the broker and Triton endpoints from `mmfeat up`'s record where env/flags named none."""
    if settings.bootstrap_servers and settings.triton_url:
        return settings
    ep = Endpoints.load(settings.state_dir)
    return settings.model_copy(
        update={
            "bootstrap_servers": settings.bootstrap_servers or ep.bootstrap_servers,
            "triton_url": settings.triton_url or ep.triton_url,
        }
    )


def with_free_ports(settings: Settings) -> Settings:
    """The same settings with every embedded-service port moved to a free one (tests, demo)."""
    return settings.model_copy(update={name: free_port() for name in PORT_SETTINGS})


def render_model_repository(
    dst: Path, model_dir: Path, *, name: str = "captioner", config_overrides: str = "", replace: dict[str, str] | None = None
) -> Path:
    """Write a model repository serving ``model_dir`` with the captioner's model.py and config.

    ``replace`` substitutes text in config.pbtxt (say, to turn dynamic batching off) and
    ``config_overrides`` appends to it; the model folder is named ``name``.
    """
    src = PROJECT_ROOT / "triton_models" / "captioner"
    config = (src / "config.pbtxt").read_text().replace('name: "captioner"', f'name: "{name}"')
    config = config.replace('string_value: "../../mmfeat/assets/captioner"', f'string_value: "{model_dir.resolve()}"')
    for old, new in (replace or {}).items():
        if old not in config:
            raise ServiceError(f"config.pbtxt has no {old!r} to replace")
        config = config.replace(old, new)
    target = dst / name
    (target / "1").mkdir(parents=True, exist_ok=True)
    (target / "config.pbtxt").write_text(config + config_overrides)
    shutil.copy2(src / "1" / "model.py", target / "1" / "model.py")
    return dst


def up(
    settings: Settings, *, model_repositories: Sequence[Path] | None = None, kafka: bool = True, triton: bool = True, log: Log = print
) -> Endpoints:
    """Start the embedded broker and Triton unless running or named by settings; idempotent."""
    state = settings.state_dir
    ep = Endpoints.load(state)
    if kafka and settings.bootstrap_servers:
        log(f"kafka: using {settings.bootstrap_servers} (MMFEAT_BOOTSTRAP_SERVERS), starting nothing")
    elif kafka and ep.kafka_pid and _runs(ep.kafka_pid, "kafka.Kafka") and ep.bootstrap_servers and kafka_ready(ep.bootstrap_servers):
        log(f"kafka: already running at {ep.bootstrap_servers} (pid {ep.kafka_pid})")
    elif kafka:
        plan = KafkaPlan(state / "kafka", settings.kafka_port, settings.kafka_controller_port)
        if _port_open(plan.port):
            raise ServiceError(f"port {plan.port} is taken by another process; stop it or set MMFEAT_BOOTSTRAP_SERVERS")
        log(f"kafka: starting Apache Kafka {KAFKA_VERSION} (KRaft) on {plan.bootstrap} ...")
        proc = start_kafka(plan, settings.cache_dir)
        ep.kafka_pid, ep.bootstrap_servers = proc.pid, plan.bootstrap
        ep.save(state)
        wait_until(lambda: kafka_ready(plan.bootstrap), "kafka broker", proc, 90, plan.dir / "server.log")
        log(f"kafka: ready at {plan.bootstrap} (pid {proc.pid})")
    if triton and settings.triton_url:
        log(f"triton: using {settings.triton_url} (MMFEAT_TRITON_URL), starting nothing")
    elif triton and ep.triton_pid and _runs(ep.triton_pid, "tritonserver") and ep.triton_http and triton_ready(ep.triton_http):
        log(f"triton: already running at {ep.triton_url} (pid {ep.triton_pid})")
    elif triton:
        if ep.triton_pid:  # a server killed hard leaves its backend stubs behind in its group
            stop_group(ep.triton_pid, TRITON_MARKERS, log=log, name="triton (left over)")
        repos = tuple(model_repositories or (settings.model_repository,))
        tplan = TritonPlan(state / "triton", repos, settings.triton_http_port, settings.triton_grpc_port, settings.triton_metrics_port)
        for port in (tplan.http_port, tplan.grpc_port, tplan.metrics_port):
            if _port_open(port):
                raise ServiceError(f"port {port} is taken by another process; stop it or set MMFEAT_TRITON_URL")
        log(f"triton: starting tritonserver on grpc {tplan.grpc_url}, http {tplan.http_url} ...")
        tproc = start_triton(tplan, settings.cache_dir)
        ep.triton_pid, ep.triton_url, ep.triton_http = tproc.pid, tplan.grpc_url, tplan.http_url
        ep.save(state)
        wait_until(lambda: triton_ready(tplan.http_url), "tritonserver", tproc, 300, tplan.dir / "tritonserver.log")
        log(f"triton: ready at {tplan.grpc_url} (pid {tproc.pid})")
    return ep


def down(settings: Settings, log: Log = print) -> None:
    """Stop exactly the processes `up` recorded in the state directory."""
    ep = Endpoints.load(settings.state_dir)
    for name, pid, markers in (("triton", ep.triton_pid, TRITON_MARKERS), ("kafka", ep.kafka_pid, KAFKA_MARKERS)):
        if pid and not stop_group(pid, markers, log=log, name=name):
            log(f"{name}: pid {pid} already gone")
    (settings.state_dir / ENDPOINTS).unlink(missing_ok=True)
