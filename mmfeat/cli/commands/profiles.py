"""The profiles app and its lookup."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from mmfeat.cli.app import app, out, settings


@app.command()
def profiles(
    features_topic: Annotated[
        str | None, typer.Option(help="Item features to join (default MMFEAT_FEATURES_TOPIC); a new version rebuilds profiles")
    ] = None,
    profiles_topic: Annotated[
        str | None, typer.Option(help="Where profiles go (default MMFEAT_PROFILES_TOPIC), e.g. user.profiles.v2")
    ] = None,
    app_id: Annotated[
        str | None, typer.Option(help="Faust app id: consumer group, internal topics, state (default: per profiles topic)")
    ] = None,
    web_port: Annotated[int | None, typer.Option(help="Lookup and /metrics port (default MMFEAT_PROFILES_WEB_PORT)")] = None,
) -> None:
    """Run the Faust app that keeps user interest profiles (engagements + item features -> user.profiles.v1).

    With another --features-topic and --profiles-topic it replays the whole engagement log against those
    features into that topic, beside the live app, then keeps it up to date."""
    from streams.app import run

    base = settings()
    s = settings(features_topic=features_topic, profiles_topic=profiles_topic, profiles_web_port=web_port)
    if app_id is None and s.topics.profiles_topic != base.topics.profiles_topic:
        app_id = f"{s.profiles.profiles_app_id}.{profiles_topic}"  # a group of its own: it starts from the log's beginning
    run(s.updated({"profiles_app_id": app_id}) if app_id else s)


@app.command()
def profile(
    user_id: Annotated[str, typer.Argument(help="The user to look up")],
    url: Annotated[str | None, typer.Option(help="The profiles app (default http://<profiles_web_host>:<profiles_web_port>)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw profile record")] = False,
) -> None:
    """Print a user's interest profile from the running profiles app, tokens decoded back to words."""
    from mmfeat.cli.render import profile_table
    from streams.client import fetch_profile

    s = settings()
    token = s.profiles.profiles_lookup_token
    base = url or f"http://{s.profiles.profiles_web_host}:{s.profiles.profiles_web_port}"
    rec = fetch_profile(base, user_id, token=token.get_secret_value() if token else None)
    if as_json:
        print(json.dumps(rec.model_dump(mode="json"), sort_keys=True))
    else:
        out.print(profile_table(rec, s))
