"""Category rules: arrival zone radius and 12345 diversion."""

from __future__ import annotations

from typing import Any

import pytest

from hub.domain.categories import DEFAULT_CATEGORY_RULES, CategoryError, load_category_rules


@pytest.mark.parametrize(("category", "radius"), [
    ("robbery", 100.0), ("traffic_accident", 150.0), ("Traffic_Jam", 150.0), ("fire", 150.0),
    ("missing_child", 300.0), ("search_rescue", 300.0), ("theft", 100.0),
])
def test_default_radius_by_category(category: str, radius: float) -> None:
    assert DEFAULT_CATEGORY_RULES.arrival_radius_m(category) == radius


@pytest.mark.parametrize(("category", "diverts"), [
    ("consultation", True), ("utility_water", True), ("MUNICIPAL_lighting", True), ("labour_dispute", True),
    ("robbery", False), ("dispute", False), ("utility", False),
])
def test_default_diversion(category: str, diverts: bool) -> None:
    assert DEFAULT_CATEGORY_RULES.diverts(category) is diverts


def test_loaded_rules_replace_what_they_name_and_keep_the_rest() -> None:
    rules = load_category_rules({"arrival_zones": {"default_m": 80, "rules": [
        {"categories": ["theft*"], "radius_m": 60}, {"categories": ["*"], "radius_m": 200}]}})
    assert rules.arrival_radius_m("theft_bicycle") == 60.0  # first match wins
    assert rules.arrival_radius_m("robbery") == 200.0
    assert rules.divert == DEFAULT_CATEGORY_RULES.divert
    only_default = load_category_rules({"arrival_zones": {"default_m": 80}, "divert_categories": []})
    assert only_default.arrival_radius_m("robbery") == 80.0
    assert only_default.arrival_radius_m("traffic_accident") == 150.0
    assert not only_default.diverts("consultation")


@pytest.mark.parametrize(("config", "words"), [
    ({"zones": {}}, "unknown keys"),
    ({"arrival_zones": {"default_m": 5}}, "10..5000"),
    ({"arrival_zones": {"default_m": True}}, "radius"),
    ({"arrival_zones": {"rules": [{"categories": ["a"]}]}}, "exactly"),
    ({"arrival_zones": {"rules": [{"categories": "a", "radius_m": 50}]}}, "list"),
    ({"arrival_zones": {"rules": [{"categories": [""], "radius_m": 50}]}}, "non-empty"),
    ({"arrival_zones": {"rules": {"x": 1}}}, "list"),
    ({"arrival_zones": {"other": 1}}, "default_m"),
    ({"divert_categories": "consultation"}, "list"),
])
def test_bad_rules_are_refused_with_a_reason(config: dict[str, Any], words: str) -> None:
    with pytest.raises(CategoryError, match=words):
        load_category_rules(config)
