"""What an incident's category decides besides its SLA policy: its arrival zone and diversion to 12345.

- **Arrival zone**: SPEC 4 fixes a 100 m default circle; some categories need another (a traffic
  accident on an arterial stretches along the road, a missing-person search covers an area).
- **Diversion** (双非, non-emergency and non-police): categories that the 110 centre hands to the
  12345 government service hotline instead of sending police.

Rules are glob patterns on the category, case-insensitive, first match wins. Loaded from the
incident configuration (`load_category_rules`); pure, no I/O.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hub.domain.errors import DomainError
from hub.domain.events import DEFAULT_RADIUS_M, MAX_RADIUS_M, MIN_RADIUS_M

__all__ = ["DEFAULT_CATEGORY_RULES", "CategoryError", "CategoryRules", "RadiusRule", "load_category_rules"]


class CategoryError(DomainError, ValueError):
    """The category rules in the configuration are malformed."""


def _matches(category: str, patterns: Sequence[str]) -> bool:
    cat = category.lower()
    return any(fnmatch.fnmatchcase(cat, p.lower()) for p in patterns)


@dataclass(frozen=True)
class RadiusRule:
    categories: tuple[str, ...]
    radius_m: float


@dataclass(frozen=True)
class CategoryRules:
    radius_rules: tuple[RadiusRule, ...] = ()
    default_radius_m: float = DEFAULT_RADIUS_M
    divert: tuple[str, ...] = ()

    def arrival_radius_m(self, category: str) -> float:
        for rule in self.radius_rules:
            if _matches(category, rule.categories):
                return rule.radius_m
        return self.default_radius_m

    def diverts(self, category: str) -> bool:
        """True when the category is non-emergency/non-police and goes to the 12345 hotline."""
        return _matches(category, self.divert)


DEFAULT_CATEGORY_RULES = CategoryRules(
    radius_rules=(
        RadiusRule(("traffic_accident", "traffic_*"), 150.0),  # the scene stretches along the road
        RadiusRule(("fire", "fire_*"), 150.0),  # appliances stand off a burning building
        RadiusRule(("missing_person", "missing_*", "search_*"), 300.0),  # the last-seen area, not a door
    ),
    divert=("consultation", "utility_*", "municipal_*", "labour_dispute", "consumer_dispute"),
)


def _radius(where: str, raw: object) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not MIN_RADIUS_M <= raw <= MAX_RADIUS_M:
        raise CategoryError(f"{where}: a radius must be {MIN_RADIUS_M:g}..{MAX_RADIUS_M:g} m, got {raw!r}")
    return float(raw)


def _patterns(where: str, raw: object) -> tuple[str, ...]:
    if isinstance(raw, str) or not isinstance(raw, Sequence) or not all(isinstance(c, str) and c for c in raw):
        raise CategoryError(f"{where}: must be a list of non-empty category patterns")
    return tuple(raw)


def load_category_rules(config: Mapping[str, Any], base: CategoryRules = DEFAULT_CATEGORY_RULES) -> CategoryRules:
    """`{"arrival_zones": {"default_m"?: 100, "rules"?: [{"categories": [glob], "radius_m": n}]},
    "divert_categories"?: [glob]}`; a key left out keeps `base`'s value."""
    unknown = set(config) - {"arrival_zones", "divert_categories"}
    if unknown:
        raise CategoryError(f"category rules: unknown keys {sorted(unknown)}")
    rules, default, divert = base.radius_rules, base.default_radius_m, base.divert
    zones = config.get("arrival_zones")
    if zones is not None:
        if not isinstance(zones, Mapping) or set(zones) - {"default_m", "rules"}:
            raise CategoryError("arrival_zones: an object with 'default_m' and/or 'rules'")
        if "default_m" in zones:
            default = _radius("arrival_zones.default_m", zones["default_m"])
        if "rules" in zones:
            raw_rules = zones["rules"]
            if isinstance(raw_rules, str) or not isinstance(raw_rules, Sequence):
                raise CategoryError("arrival_zones.rules: must be a list")
            parsed = []
            for i, raw in enumerate(raw_rules):
                where = f"arrival_zones.rules[{i}]"
                if not isinstance(raw, Mapping) or set(raw) != {"categories", "radius_m"}:
                    raise CategoryError(f"{where}: an object with exactly 'categories' and 'radius_m'")
                parsed.append(RadiusRule(_patterns(f"{where}.categories", raw["categories"]),
                                         _radius(f"{where}.radius_m", raw["radius_m"])))
            rules = tuple(parsed)
    if "divert_categories" in config:
        divert = _patterns("divert_categories", config["divert_categories"])
    return CategoryRules(rules, default, divert)
