"""The CLI's commands, one module per area; importing this package registers them on ``mmfeat.cli.app.app``,
in the order `mmfeat --help` lists them."""

import importlib

AREAS = ("services", "pipeline", "profiles", "models", "evaluation")
for _area in AREAS:
    importlib.import_module(f"mmfeat.cli.commands.{_area}")
