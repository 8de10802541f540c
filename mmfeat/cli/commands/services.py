"""`mmfeat up` / `down`: the embedded broker and Triton server."""

from __future__ import annotations

from typing import Annotated

import typer

from mmfeat.cli.app import _flags, app, console, out
from mmfeat.settings import load_settings


@app.command()
def up(
    kafka: bool = True,
    triton: bool = True,
    brokers: Annotated[int | None, typer.Option(min=1, max=9, help="KRaft nodes (3: a replicated cluster); default 1")] = None,
) -> None:
    """Start the embedded Kafka broker(s) and Triton server and create the topics. Idempotent: what runs is left
    alone, a node that stopped is started again (it rejoins its cluster)."""
    from mmfeat.cli import services
    from mmfeat.topics import create_topics

    s = load_settings(**_flags, **({"kafka_brokers": brokers} if brokers else {}))
    services.up(s, kafka=kafka, triton=triton, log=console.print)
    if kafka:
        created = create_topics(services.resolve(s))
        console.print(f"topics: created {', '.join(created)}" if created else "topics: all present")


@app.command()
def down() -> None:
    """Stop exactly the services `mmfeat up` started."""
    from mmfeat.cli import services

    services.down(load_settings(**_flags), log=console.print)


@app.command()
def status(brokers: Annotated[int | None, typer.Option(min=1, max=9, help="as given to `mmfeat up`")] = None) -> None:
    """What `mmfeat up` runs and where, and each topic partition's leader and in-sync replicas."""
    from mmfeat.cli import services
    from mmfeat.cli.render import partitions_table, services_table

    s = load_settings(**_flags, **({"kafka_brokers": brokers} if brokers else {}))
    nodes, parts = services.kafka_status(s)
    ep = services.Endpoints.load(s.services.state_dir)
    triton = services.resolve(s).triton.triton_url
    http = ep.triton_http if not s.triton.triton_url else None
    ready = bool(http) and services.triton_ready(http or "")
    out.print(services_table(nodes, s.kafka.bootstrap_servers, triton, ep.triton_pid if http else None, ready))
    if parts:
        out.print(partitions_table(parts))
        under = sum(p.under_replicated for p in parts)
        leaderless = sum(p.leader < 0 for p in parts)
        out.print(f"{len(parts)} partitions: {under} under-replicated, {leaderless} without a leader")
    elif nodes and not any(n.listening for n in nodes):
        out.print("kafka is not running (`mmfeat up`)")
