"""The incident configuration file (`FIELDHUB_INCIDENT_CONFIG`): SLA policies, rules, zones, diversion.

```json
{"policies": {"city_standard": {"dispatched": 90, "arrived": 900}},
 "rules": [{"policy": "city_standard", "categories": ["theft*"], "priority": [2, 4]}],
 "default_policy": null,
 "arrival_zones": {"default_m": 100, "rules": [{"categories": ["traffic_*"], "radius_m": 150}]},
 "divert_categories": ["consultation", "utility_*"]}
```
Policies are merged over the built-in ones; `rules`, when given, replace the built-in rules;
`arrival_zones` and `divert_categories` replace their built-in counterparts. A bad file stops
the hub at start-up with a message naming the problem.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hub.config import read_json_file
from hub.domain.categories import DEFAULT_CATEGORY_RULES, CategoryError, CategoryRules, load_category_rules
from hub.domain.sla import BUILTIN_POLICIES, DEFAULT_RULES, Policy, PolicyError, PolicyRules, load_policies, load_rules
from hub.errors import HubError

__all__ = ["IncidentConfig", "IncidentConfigError", "ResponseOptions", "load_incident_config",
           "parse_incident_config"]

KEYS = {"policies", "rules", "default_policy", "arrival_zones", "divert_categories"}


class IncidentConfigError(HubError):
    pass


@dataclass(frozen=True)
class IncidentConfig:
    policies: dict[str, Policy] = field(default_factory=lambda: dict(BUILTIN_POLICIES))
    rules: PolicyRules = DEFAULT_RULES
    categories: CategoryRules = DEFAULT_CATEGORY_RULES


@dataclass(frozen=True)
class ResponseOptions:
    """How the incident service follows a response (from the settings): acks, auto-dispatch, SOS, detectors."""

    ack_timeout_s: float = 15.0
    ack_resends: int = 1
    auto_dispatch_priority: int = 1
    public_base_url: str = "http://127.0.0.1:8000"
    video_token_ttl_s: float = 300.0
    sos_incident: bool = True
    milestone_max_shift_s: float = 300.0
    sos_max_distance_m: float = 1000.0
    aerial_min_alt_m: float = 20.0  # a drone hovering lower over the scene has not arrived


def parse_incident_config(raw: Any) -> IncidentConfig:
    if not isinstance(raw, dict):
        raise IncidentConfigError("incident config: the file must hold a JSON object")
    unknown = set(raw) - KEYS
    if unknown:
        raise IncidentConfigError(f"incident config: unknown keys {sorted(unknown)} (known: {sorted(KEYS)})")
    try:
        policies = load_policies(raw.get("policies", {}))
        rules = DEFAULT_RULES
        if "rules" in raw or "default_policy" in raw:
            rules = load_rules({"rules": raw.get("rules", []), "default": raw.get("default_policy")}, policies)
        categories = load_category_rules({k: raw[k] for k in ("arrival_zones", "divert_categories") if k in raw})
    except (PolicyError, CategoryError) as exc:
        raise IncidentConfigError(f"incident config: {exc}") from exc
    return IncidentConfig(policies, rules, categories)


def load_incident_config(path: Path | None) -> IncidentConfig:
    if path is None:
        return IncidentConfig()
    return parse_incident_config(read_json_file(path, "incident config", IncidentConfigError))
