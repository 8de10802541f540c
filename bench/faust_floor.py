"""The floor of any Faust app: one agent that only counts the events of a topic (`python -m bench.faust_floor`).

Run as its own process by bench/profiles.py; writes ``{"events": N, "seconds": S}`` to OUT once N events
were seen, timed from the first event (start-up and rebalance excluded), and exits at once (a graceful
Faust shutdown from inside an agent waits for that agent's own event). With ``batched`` it counts micro-batches
from ``take_events`` instead (what the profiles app's ingest does), for comparison.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import faust


def main(bootstrap: str, topic: str, n: int, out: str, datadir: str, batched: bool = False) -> None:
    app = faust.App(
        f"bench-faust-floor-{time.time_ns()}", broker=f"kafka://{bootstrap}", store="memory://", datadir=datadir,
        topic_allow_declare=False, consumer_auto_offset_reset="earliest", web_enabled=False, autodiscover=False,
    )  # fmt: skip
    source = app.topic(topic, key_serializer="raw", value_serializer="raw")

    def done(seen: int, start: float) -> None:
        Path(out).write_text(json.dumps({"events": seen, "seconds": time.perf_counter() - start}))
        os._exit(0)

    @app.agent(source)
    async def count(stream: Any) -> None:
        seen, start = 0, 0.0
        if batched:  # micro-batches of events (what the profiles app's ingest does), counted
            async for events in stream.take_events(1000, within=0.05):
                if not start:  # timed from the first batch, which is not counted
                    start = time.perf_counter()
                    continue
                seen += len(events)
                if seen >= n - 2000:
                    done(seen, start)
        async for _ in stream.events():
            seen += 1
            if seen == 1:
                start = time.perf_counter()
            if seen == n:
                done(n - 1, start)

    worker = faust.Worker(app, loglevel="warning", quiet=True)
    worker.spinner = None
    worker.execute_from_commandline()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], batched=len(sys.argv) > 6 and sys.argv[6] == "batched")
