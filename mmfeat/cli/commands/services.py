"""`mmfeat up` / `down`: the embedded broker and Triton server."""

from __future__ import annotations

from mmfeat.cli.app import _flags, app, console
from mmfeat.settings import load_settings


@app.command()
def up(kafka: bool = True, triton: bool = True) -> None:
    """Start the embedded Kafka broker and Triton server (idempotent) and create the topics."""
    from mmfeat.cli import services
    from mmfeat.topics import create_topics

    s = load_settings(**_flags)
    services.up(s, kafka=kafka, triton=triton, log=console.print)
    if kafka:
        created = create_topics(services.resolve(s))
        console.print(f"topics: created {', '.join(created)}" if created else "topics: all present")


@app.command()
def down() -> None:
    """Stop exactly the services `mmfeat up` started."""
    from mmfeat.cli import services

    services.down(load_settings(**_flags), log=console.print)
