"""The composition root: the `mmfeat` CLI, the demo, rendering, producers of uploads and engagements, and the
embedded services. It wires the stages (workers/, streams/, captioner/, ranking/, bench/) to the shared core;
nothing in the core imports it."""

from __future__ import annotations


def main() -> None:
    from mmfeat.cli import commands  # noqa: F401  # registers every command on the app
    from mmfeat.cli.app import run

    run()
