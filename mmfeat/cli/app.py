"""The `mmfeat` Typer app: global options, the one settings helper, and one-line errors (commands live in
mmfeat/cli/commands/).

Every command reads the one Settings object (MMFEAT_* env vars, then flags) and prints a one-line
error, never a traceback, for anything mmfeat raised on purpose.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from confluent_kafka import KafkaException
from rich.console import Console
from rich.markup import escape

from mmfeat.errors import MmfeatError
from mmfeat.settings import Settings, load_settings
from mmfeat.untrusted import clean, install_log_escaping

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Multimedia uploads to recommendation features, on Kafka and Triton.",
)
console = Console(stderr=True, soft_wrap=True)  # one message, one line: no wrapping at the terminal's width
out = Console(highlight=False)

_flags: dict[str, Any] = {}


@app.callback()
def _global(
    bootstrap_servers: Annotated[str | None, typer.Option(help="Kafka bootstrap servers (default: the embedded broker)")] = None,
    triton_url: Annotated[str | None, typer.Option(help="Triton gRPC host:port (default: the embedded server)")] = None,
    state_dir: Annotated[Path | None, typer.Option(help="Where embedded services keep data, logs and pids")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    _flags.update(bootstrap_servers=bootstrap_servers, triton_url=triton_url, state_dir=state_dir)


def settings(**overrides: Any) -> Settings:
    from mmfeat.cli.services import resolve

    return resolve(load_settings(**_flags, **overrides))


def run() -> None:
    install_log_escaping()
    try:
        app()
    except (MmfeatError, KafkaException) as e:  # KafkaException: a client call we did not wrap; still one line
        text = e.args[0].str() if isinstance(e, KafkaException) and e.args and hasattr(e.args[0], "str") else str(e)
        console.print(f"[red]error:[/red] {escape(clean(text, 2000))}")
        sys.exit(1)
