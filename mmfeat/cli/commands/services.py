"""`mmfeat up` / `down` / `status`: the embedded broker and Triton server; `kafka-node` and `tritonserver`: one of
them in the foreground, as a container's process (deploy/docker/)."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from mmfeat.cli.app import _flags, app, console, out
from mmfeat.errors import ConfigError
from mmfeat.settings import PROJECT_ROOT, load_settings


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


@app.command("kafka-node")
def kafka_node(node: Annotated[int, typer.Argument(min=1, max=9, help="which node, from 1")]) -> None:
    """Run KRaft node NODE of the MMFEAT_KAFKA_BROKERS-node cluster in the foreground, logging to stdout (a
    container's process; its nodes share the id MMFEAT_KAFKA_CLUSTER_ID). `mmfeat up` starts the same nodes detached."""
    from mmfeat.cli import services

    s = load_settings(**_flags)
    plans = services.kafka_plans(s)
    if node > len(plans):
        raise ConfigError(f"node {node} of a {len(plans)}-node cluster (MMFEAT_KAFKA_BROKERS={s.services.kafka_brokers})")
    if len(plans) > 1 and not s.services.kafka_cluster_id:
        raise ConfigError("nodes that share no folder need one cluster id: set MMFEAT_KAFKA_CLUSTER_ID")
    cmd = services.kafka_command(plans[node - 1], s.services.cache_dir, console=True)
    console.print(f"kafka: node {node} of {len(plans)} on {plans[node - 1].bootstrap}")
    os.execvp(cmd[0], cmd)  # the broker becomes this process: a container's signals reach it


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def tritonserver(ctx: typer.Context) -> None:
    """Run the nvidia-pytriton wheel's tritonserver in the foreground with its Python backend and environment,
    passing every argument on (the local Triton image's `tritonserver`; NGC's image has its own)."""
    from mmfeat.cli import services

    s = load_settings(**_flags)
    cmd = services.tritonserver_command(s.services.cache_dir) + list(ctx.args)
    os.chdir(PROJECT_ROOT)  # the Python backend stub finds `mmfeat` through its working directory
    os.execvpe(cmd[0], cmd, services.triton_env())
