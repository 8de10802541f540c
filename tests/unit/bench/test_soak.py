"""The soak bench's verdicts from its samples: RSS growth after the warm-up, lag bounded, the goals."""

from __future__ import annotations

from typing import Any

from bench.soak import _figures

LOSS_FREE = {"zero_loss": True}


def samples(n: int, rss: Any, lag: Any) -> list[dict[str, Any]]:
    return [
        {"t_s": 5.0 * i, "rss_mb": {"a": rss(i), "b": 100.0}, "lag_uploads": lag(i), "lag_engagements": 0,
         "freshness_p50_s": 0.5, "freshness_p99_s": 1.0, "features": i}
        for i in range(n)
    ]  # fmt: skip


def figures(xs: list[dict[str, Any]], minutes: float = 10) -> dict[str, Any]:
    return _figures(xs, minutes, 2.0, 50.0, 5.0, 100, 1000, {"drained_s": 1.0}, LOSS_FREE)


def test_growth_is_measured_after_the_warm_up_only() -> None:
    # a steep climb in the first 100 s (the warm-up of a 10-minute run), flat after: no growth counted
    doc = figures(samples(120, lambda i: 50.0 + 10 * min(i, 20), lambda i: 5))
    assert doc["warm_up_s"] == 100.0
    assert doc["rss"]["a"]["growth"] == 0.0 and doc["worst_rss_growth"] == 0.0
    assert doc["goals"] == {"rss_growth_under_10pct": True, "lag_bounded": True, "zero_loss": True}


def test_a_steady_climb_after_the_warm_up_fails_the_memory_goal() -> None:
    doc = figures(samples(120, lambda i: 100.0 + i, lambda i: 5))
    a = doc["rss"]["a"]
    assert a["start_mb"] < a["end_mb"] and a["growth"] > 0.10
    assert doc["worst_rss_growth"] == a["growth"] and not doc["goals"]["rss_growth_under_10pct"]
    assert doc["rss"]["b"]["growth"] == 0.0


def test_lag_that_swings_is_bounded_and_lag_that_climbs_is_not() -> None:
    swings = figures(samples(120, lambda i: 100.0, lambda i: (i * 37) % 200))
    assert swings["lag"]["lag_uploads"]["bounded"]

    doc = figures(samples(120, lambda i: 100.0, lambda i: 10 * i))
    assert doc["lag"]["lag_uploads"]["max_last_third"] > 1.2 * doc["lag"]["lag_uploads"]["max_first_third"] + 64
    assert not doc["lag"]["lag_uploads"]["bounded"] and not doc["goals"]["lag_bounded"]
    assert doc["lag"]["lag_engagements"]["bounded"]
