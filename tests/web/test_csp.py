"""The one-map under its Content-Security-Policy: it loads and runs with zero violations, the live feed opens
with a single-use ticket (never the token in a URL), and the policy really blocks an injected inline script.

Every browser test fails on a CSP violation (tests/web/conftest.py); this one walks the parts of the page
that set styles from script (priority badges, battery bars) and checks the policy is enforced at all.
"""

from __future__ import annotations

import pytest

from tests.conftest import TOKEN, wait_for
from tests.web.conftest import UNITS, CityRun, OpenPage
from tests.web.one_map import tid

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_the_one_map_works_under_its_policy(city: CityRun, open_page: OpenPage) -> None:
    web = await open_page(city.base_url, TOKEN)
    await web.page.locator(tid("conn", state="connected")).wait_for()
    await web.until(f"() => window.fieldhub.units.size >= {UNITS} && window.fieldhub.stats.unitsDrawn >= {UNITS}")
    assert "token=" not in web.page.url  # taken into localStorage, out of the address bar

    # The page came with the policy, and the feed was opened with a ticket.
    headers = (await web.page.request.get(city.base_url + "/")).headers
    assert "script-src 'self';" in headers["content-security-policy"]
    assert len(web.socket_urls) == 1 and "?ticket=lt_" in web.socket_urls[0], web.socket_urls
    assert not any("token" in url for url in web.socket_urls)

    # Styles set from script: priority badges (list and panel) and the battery bars of a unit's devices.
    r = await city.hub.api.post("/api/v1/incidents", json={"category": "theft", "priority": 2, "lat": 34.2610,
                                                           "lon": 117.1859, "summary": "csp check"})
    assert r.status_code == 201, r.text
    item = web.page.locator(tid("incident-item", incident_id=r.json()["id"]))
    await item.click()
    badge = web.page.locator(f'{tid("incident-panel")} .prio-badge')
    await badge.wait_for()
    assert await badge.evaluate("(n) => getComputedStyle(n).backgroundColor") not in ("", "rgba(0, 0, 0, 0)")
    unit_id = sorted(await web.js("() => [...window.fieldhub.units.keys()]"))[0]
    await web.by_id("search").fill(unit_id)
    await web.page.locator(tid("search-result", kind="unit", id=unit_id)).first.click()
    bar = web.page.locator(f'{tid("unit-panel", unit_id=unit_id)} .battery .bar i').first
    await bar.wait_for()
    width = await bar.evaluate("(n) => n.style.width")
    assert width.endswith("%") and width != "0%", width

    assert web.csp_violations == []

    # The policy is enforced, not just sent: an inline script injected now does not run, and is reported.
    ran = await web.js("""() => { const s = document.createElement("script");
        s.textContent = "window.__inlineRan = true"; document.head.append(s); return window.__inlineRan === true; }""")
    assert ran is False
    await wait_for(lambda: bool(web.csp_violations), timeout=5)  # the event reaches the test asynchronously
    assert any(v.startswith("script-src-elem inline") for v in web.csp_violations), web.csp_violations
    web.csp_violations.clear()  # the one violation this test caused on purpose
    web.expect_console(r"inline script violates the following Content Security Policy")
