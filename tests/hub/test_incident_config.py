"""The incident configuration file: policies, rules, zones and diversion, with clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hub.config import Settings
from hub.errors import HubStartError
from hub.incidents.config import IncidentConfigError, load_incident_config
from tests.conftest import running_hub


def write(tmp_path: Path, content: object) -> Path:
    path = tmp_path / "incidents.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return path


def test_no_file_means_the_built_in_configuration() -> None:
    config = load_incident_config(None)
    assert {"rapid_12358", "missing_person", "nfpa_1710"} <= set(config.policies)
    assert config.rules.select("robbery", 3) == "rapid_12358"
    assert config.categories.arrival_radius_m("traffic_accident") == 150.0


def test_a_full_file(tmp_path: Path) -> None:
    config = load_incident_config(write(tmp_path, {
        "policies": {"city_standard": {"dispatched": 90, "arrived": 900}},
        "rules": [{"policy": "city_standard", "categories": ["theft*"], "priority": [2, 4]}],
        "default_policy": "rapid_12358",
        "arrival_zones": {"default_m": 120},
        "divert_categories": ["noise"],
    }))
    assert config.rules.select("theft_bike", 3) == "city_standard"
    assert config.rules.select("theft_bike", 1) == "rapid_12358"  # the default, no rule matched
    assert config.categories.arrival_radius_m("robbery") == 120.0
    assert config.categories.diverts("noise") and not config.categories.diverts("consultation")
    assert config.policies["city_standard"].targets["arrived"] == 900


@pytest.mark.parametrize(("content", "words"), [
    ("{not json", "not valid JSON"),
    ("[]", "JSON object"),
    ({"polices": {}}, "unknown keys"),
    ({"rules": [{"policy": "nope"}]}, "unknown policy"),
    ({"policies": {"x": {"arrived": -5}}}, "x"),
    ({"arrival_zones": {"default_m": 0}}, "10..5000"),
])
def test_a_bad_file_is_refused_with_the_reason(tmp_path: Path, content: object, words: str) -> None:
    with pytest.raises(IncidentConfigError, match=words):
        load_incident_config(write(tmp_path, content))


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(IncidentConfigError, match="cannot read"):
        load_incident_config(tmp_path / "absent.json")


async def test_the_hub_uses_the_file_and_refuses_to_start_with_a_bad_one(settings: Settings, tmp_path: Path) -> None:
    good = write(tmp_path, {"arrival_zones": {"default_m": 75}})
    async with running_hub(settings.model_copy(update={"incident_config": good})) as hub:
        r = await hub.api.post("/api/v1/incidents", json={"category": "theft", "priority": 3, "lat": 34.26,
                                                         "lon": 117.18})
        assert r.json()["arrival_radius_m"] == 75.0
    bad = write(tmp_path, {"arrival_zones": {"default_m": "far"}})
    with pytest.raises(HubStartError, match="radius") as refused:
        async with running_hub(settings.model_copy(update={"incident_config": bad})):
            pass
    assert isinstance(refused.value.__cause__, IncidentConfigError)
