"""The embedded Triton Inference Server, from the nvidia-pytriton wheel, serving triton_models/ on the CPU."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from mmfeat.errors import ServiceError
from mmfeat.settings import PROJECT_ROOT


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


def tritonserver_command(cache_dir: Path) -> list[str]:
    """The wheel's tritonserver with its backend folder; run it with ``triton_env()`` in PROJECT_ROOT."""
    return [str(_pytriton_dir() / "tritonserver" / "bin" / "tritonserver"), "--backend-directory", str(triton_backend_dir(cache_dir))]


def start_triton(plan: TritonPlan, cache_dir: Path) -> subprocess.Popen[bytes]:
    plan.dir.mkdir(parents=True, exist_ok=True)
    cmd = tritonserver_command(cache_dir)
    for repo in plan.model_repositories:
        cmd += ["--model-repository", str(Path(repo).resolve())]
    cmd += [
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


def render_reader_model(dst: Path, model: str, *, name: str | None = None, model_dir: Path | None = None) -> Path:
    """Add a reader model (triton_models/ocr or triton_models/asr) to the model repository ``dst``, as ``name``
    (default: its own), serving ``model_dir`` where the model takes one (ASR: a Whisper directory)."""
    src = PROJECT_ROOT / "triton_models" / model
    target = dst / (name or model)
    (target / "1").mkdir(parents=True, exist_ok=True)
    config = (src / "config.pbtxt").read_text().replace(f'name: "{model}"', f'name: "{name or model}"')
    if model_dir is not None:
        old = 'key: "model_dir", value: { string_value: "pocketsphinx" }'
        if old not in config:
            raise ServiceError(f"{model}'s config.pbtxt takes no model_dir")
        config = config.replace(old, f'key: "model_dir", value: {{ string_value: "{model_dir.resolve()}" }}')
    (target / "config.pbtxt").write_text(config)
    shutil.copy2(src / "1" / "model.py", target / "1" / "model.py")
    return dst


def render_model_repository(
    dst: Path, model_dir: Path, *, name: str = "captioner", config_overrides: str = "", replace: dict[str, str] | None = None
) -> Path:
    """Write a model repository serving ``model_dir`` with the captioner's model.py and config.

    ``replace`` substitutes text in config.pbtxt (say, to turn dynamic batching off) and
    ``config_overrides`` appends to it; the model folder is named ``name``.
    """
    src = PROJECT_ROOT / "triton_models" / "captioner"
    config = (src / "config.pbtxt").read_text().replace('name: "captioner"', f'name: "{name}"')
    config = config.replace('string_value: "../../captioner/assets/default"', f'string_value: "{model_dir.resolve()}"')
    for old, new in (replace or {}).items():
        if old not in config:
            raise ServiceError(f"config.pbtxt has no {old!r} to replace")
        config = config.replace(old, new)
    target = dst / name
    (target / "1").mkdir(parents=True, exist_ok=True)
    (target / "config.pbtxt").write_text(config + config_overrides)
    shutil.copy2(src / "1" / "model.py", target / "1" / "model.py")
    return dst
