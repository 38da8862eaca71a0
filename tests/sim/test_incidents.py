"""The incident generator: its Poisson stream and call mix (pure), and its calls to a real hub."""

from __future__ import annotations

import math
import random
from collections import Counter
from itertools import islice

from sim.city import build_city
from sim.incidents import MIX, IncidentGenerator, arrival_gaps, draw_call
from sim.runner import CitySim
from tests.conftest import ADMIN_TOKEN, TOKEN, RunningHub, wait_for


def test_calls_come_as_a_poisson_stream_at_the_configured_rate() -> None:
    gaps = list(islice(arrival_gaps(random.Random(1), 6.0), 20_000))  # 6 a minute: 10 s apart on average
    mean = sum(gaps) / len(gaps)
    assert abs(mean - 10.0) < 0.25
    sd = math.sqrt(sum((g - mean) ** 2 for g in gaps) / len(gaps))
    assert abs(sd / mean - 1.0) < 0.04  # exponential: as wide as it is long
    assert abs(sum(g > 10.0 for g in gaps) / len(gaps) - math.exp(-1)) < 0.015
    # Counts per minute are Poisson(6): variance close to the mean.
    minutes = Counter(int(t // 60) for t in _cumulative(gaps))
    counts = [minutes.get(m, 0) for m in range(int(sum(gaps) // 60))]
    c_mean = sum(counts) / len(counts)
    c_var = sum((c - c_mean) ** 2 for c in counts) / len(counts)
    assert abs(c_mean - 6.0) < 0.2 and abs(c_var / c_mean - 1.0) < 0.15


def _cumulative(gaps: list[float]) -> list[float]:
    out, t = [], 0.0
    for g in gaps:
        t += g
        out.append(t)
    return out


def test_the_call_mix_follows_its_weights_and_priorities() -> None:
    rng = random.Random(2)
    draws = [draw_call(rng) for _ in range(20_000)]
    total = sum(c.weight for c in MIX)
    seen = Counter(category for category, _ in draws)
    for call in MIX:
        assert abs(seen[call.category] / len(draws) - call.weight / total) < 0.01, call.category
        allowed = {p for p, _ in call.priorities}
        assert {p for c, p in draws if c == call.category} == allowed
    assert all(1 <= p <= 4 for _, p in draws)


async def test_the_generator_posts_valid_incidents_at_its_rate_and_gives_up_without_units(hub: RunningHub) -> None:
    city = build_city(7)
    async with IncidentGenerator(hub.base_url, TOKEN, city, rate_per_min=120.0, seed=5, dispatch_delay_s=(0.1, 0.2),
                                 retry_s=0.3, give_up_s=1.0) as generator:
        posted = await generator.run(duration_s=6.0)
        # The schedule is the seed's: exactly the calls due within the 6 s were posted.
        due = sum(1 for t in _cumulative(list(islice(arrival_gaps(random.Random(6), 120.0), 100))) if t <= 6.0)
        assert posted == due and 4 <= posted <= 25
        await generator.wait_idle()
    listed = (await hub.api.get("/api/v1/incidents", params={"limit": 1000})).json()["incidents"]
    assert len(listed) == posted == len(generator.created)
    min_lat, min_lon, max_lat, max_lon = city.bounds()
    categories = {c.category for c in MIX}
    for view in generator.created:
        stored = (await hub.api.get(f"/api/v1/incidents/{view['id']}")).json()
        assert stored["category"] in categories and 1 <= stored["priority"] <= 4
        assert min_lat - 0.01 <= stored["lat"] <= max_lat + 0.01 and min_lon - 0.01 <= stored["lon"] <= max_lon + 0.01
        assert stored["summary"] and stored["address"]
        # No unit is on the map: the dispatcher tried, gave up and closed what was not diverted to 12345.
        assert stored["status"] in ("closed", "diverted"), stored["status"]
        assert stored["assignments"] == []
    counts = generator.counts
    assert counts["no_unit"] == counts["closed"] == posted - counts["diverted"]
    assert counts["refused"] == counts["errors"] == 0


async def test_the_dispatcher_sends_the_best_unit_and_closes_when_it_clears(hub: RunningHub) -> None:
    assert hub.hub.mqtt_url is not None
    async with CitySim(hub.base_url, "", ADMIN_TOKEN, units=1, seed=4, interval_s=(0.5, 0.5),
                       start_parked=True) as sim, \
            IncidentGenerator(hub.base_url, TOKEN, sim.built_city, rate_per_min=1.0, seed=8,
                              dispatch_delay_s=(0.1, 0.2), close_delay_s=(0.1, 0.2),
                              mix=[m for m in MIX if m.category == "theft"], radii=sim.radii) as generator:
        sim.on_clear.append(generator.unit_cleared)
        await wait_for(lambda: hub.hub.live.units.get("P001") and hub.hub.live.units["P001"].fix, timeout=10)
        view = await generator.post_one()
        assert view is not None and view["category"] == "theft" and view["priority"] >= 2
        assert view["assignments"] == []  # priority 2-4: the hub leaves it to the dispatcher
        incident_id = view["id"]
        await wait_for(lambda: sim.units[0].incident_id == incident_id, timeout=10)
        stored = (await hub.api.get(f"/api/v1/incidents/{incident_id}")).json()
        assert [a["unit_id"] for a in stored["assignments"]] == ["P001"]
        assert generator.counts["dispatched"] == 1
        # The unit reports clear (CitySim.on_clear, here called at once): the dispatcher closes the incident.
        generator.unit_cleared("P001", incident_id)

        async def closed() -> bool:
            return bool((await hub.api.get(f"/api/v1/incidents/{incident_id}")).json()["status"] == "closed")

        await wait_for(closed, timeout=10)
        assert generator.counts["closed"] == 1
        final = (await hub.api.get(f"/api/v1/incidents/{incident_id}")).json()
        assert final["log"][-1]["reason"] == "cleared by P001 (simulated)"
        # The unit signed for the dispatch with its devices' own time.
        acks = [d.client.acks[final["assignments"][0]["cmd_id"]] for d in sim.units[0].devices]
        assert final["milestones"]["acknowledged"]["ts"] in acks


async def test_the_simulated_analyst_attaches_support_within_the_target(hub: RunningHub) -> None:
    robbery = [m for m in MIX if m.category == "robbery"]  # rapid_12358: supported within 300 s
    async with IncidentGenerator(hub.base_url, TOKEN, build_city(7), rate_per_min=1.0, seed=3, mix=robbery,
                                 dispatch_delay_s=(60.0, 60.0), support_share=(0.001, 0.002)) as generator:
        view = await generator.post_one()
        assert view is not None and view["policy"] == "rapid_12358"

        async def supported() -> object:
            stored = (await hub.api.get(f"/api/v1/incidents/{view['id']}")).json()
            return stored["milestones"]["supported"]

        mark = await wait_for(supported, timeout=10)
        assert mark["source"] == "manual" and mark["ts"] - view["received_at"] < 5_000
