"""The page's other faces: the login, the language toggle (zh-CN / English), the response-time dashboard."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from tests.conftest import TOKEN, wait_for
from tests.web.conftest import CityRun, OpenPage, WebPage
from tests.web.one_map import closed_incidents, tid

pytestmark = pytest.mark.asyncio(loop_scope="session")

CJK = re.compile(r"[\u4e00-\u9fff]")


async def test_login_with_a_token_and_back_to_the_login_on_a_bad_one(city: CityRun, open_page: OpenPage) -> None:
    web = await open_page(city.base_url, None, wait_ready=False)
    web.expect_console(r"status of 401")  # the bad token's refused calls
    login = web.by_id("login")
    await login.wait_for()
    await web.by_id("login-token").fill("fh_not_a_token")
    await web.by_id("login-submit").click()
    await web.page.wait_for_timeout(1500)
    assert await login.is_visible(), "a bad token must not get past the login"
    assert await web.js("() => !window.fieldhub || window.fieldhub.ready !== true")

    await web.by_id("login-token").fill(TOKEN)
    await web.by_id("login-submit").click()
    await web.ready()
    assert not await login.is_visible()
    assert await web.js("() => localStorage.getItem('fieldhub.token')") == TOKEN
    # The token given in the address bar is stored and taken out of it.
    other = await open_page(city.base_url, TOKEN)
    assert "token=" not in other.page.url
    assert await other.js("() => localStorage.getItem('fieldhub.token')") == TOKEN
    await other.page.locator(tid("conn", state="connected")).wait_for()


async def test_the_language_toggle_switches_the_visible_texts(city: CityRun, open_page: OpenPage) -> None:
    web = await open_page(city.base_url, TOKEN)

    async def texts() -> dict[str, Any]:
        result: dict[str, Any] = await web.js("""() => ({
            lang: window.fieldhub.lang, htmlLang: document.documentElement.lang,
            labels: ["view-map", "view-dashboard", "conn"].map((id) =>
                (document.querySelector(`[data-testid="${id}"]`) || {}).innerText || ""),
            body: document.body.innerText})""")
        result["cjk"] = len(CJK.findall(result["body"]))
        return result

    first = await texts()
    assert first["lang"] in ("zh-CN", "en")
    await web.by_id("lang-toggle").click()
    await web.until("(lang) => window.fieldhub.lang !== lang", first["lang"], timeout_s=5)
    second = await texts()
    zh, en = (first, second) if first["lang"] == "zh-CN" else (second, first)
    assert {zh["lang"], en["lang"]} == {"zh-CN", "en"}
    assert zh["labels"] != en["labels"]
    assert all(CJK.search(label) for label in zh["labels"][:2]), zh["labels"]
    assert not any(CJK.search(label) for label in en["labels"]), en["labels"]
    assert en["cjk"] * 5 < zh["cjk"], f"CJK characters on the page: zh {zh['cjk']}, en {en['cjk']}"
    await web.by_id("lang-toggle").click()
    await web.until("(lang) => window.fieldhub.lang === lang", first["lang"], timeout_s=5)
    assert (await texts())["labels"] == first["labels"]


async def test_the_dashboard_renders_its_charts_from_the_reports_api(city: CityRun, open_page: OpenPage) -> None:
    await closed_incidents(city, 3)
    report = (await city.hub.api.get("/api/v1/reports/response-times", params={"group_by": "category"})).json()
    web = await open_page(city.base_url, TOKEN)
    requests: list[str] = []
    web.page.on("requestfinished", lambda req: requests.append(req.url) if "/api/v1/reports/" in req.url else None)

    await web.by_id("view-dashboard").click()
    await web.by_id("dashboard").wait_for()
    await web.until("() => performance.getEntriesByType('resource')"
                    ".some((e) => e.name.includes('/api/v1/reports/response-times'))")
    charts = await _charts(web)
    for name in ("chart-compliance", "chart-times"):
        chart = charts[name]
        assert chart["inked"] > 500, f"{name} draws nothing: {chart}"
        assert any(chart["values"]), f"{name} has no data: {chart}"
    # The charts show the hub's numbers (in whatever unit the page chose: a ratio or a percentage; s or min).
    overall = report["overall"]["milestones"]
    compliance = sorted(m["compliance"] for m in overall.values() if m["compliance"] is not None)
    assert compliance, report
    assert _same_scaled(charts["chart-compliance"]["values"][0], compliance, (1.0, 100.0), 0.1), (charts, report)
    p50 = sorted(m["p50"] for m in overall.values() if m["p50"] is not None)
    assert _same_scaled(charts["chart-times"]["values"][0], p50, (1.0, 1 / 60, 1000.0), 0.01), (charts, report)

    before = len(requests)
    await web.by_id("dash-group").select_option("unit")
    await wait_for(lambda: any("group_by=unit" in u for u in requests[before:]), timeout=10)
    await web.by_id("view-map").click()
    await web.by_id("map").wait_for()


async def _charts(web: WebPage) -> dict[str, Any]:
    """Per chart: how many of its canvas pixels are drawn, and its Chart.js labels and data (if Chart.js)."""
    await web.until("""() => ['chart-compliance', 'chart-times'].every((id) => {
        const el = document.querySelector(`[data-testid="${id}"]`);
        const canvas = el && (el.tagName === 'CANVAS' ? el : el.querySelector('canvas'));
        return canvas && canvas.width > 0 && (!window.Chart || window.Chart.getChart(canvas));
    })""")
    await asyncio.sleep(1.0)  # Chart.js animates in
    result: dict[str, Any] = await web.js("""() => Object.fromEntries(['chart-compliance', 'chart-times'].map((id) => {
        const el = document.querySelector(`[data-testid="${id}"]`);
        const canvas = el.tagName === 'CANVAS' ? el : el.querySelector('canvas');
        const px = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
        let inked = 0;
        for (let i = 3; i < px.length; i += 4) if (px[i] > 0) inked++;
        const chart = window.Chart && window.Chart.getChart(canvas);
        const data = chart ? chart.data : {labels: [], datasets: []};
        const values = data.datasets.map((d) => d.data.filter((v) => v !== null && v !== undefined));
        return [id, {inked, values, labels: data.labels, datasets: data.datasets.map((d) => d.label)}];
    }))""")
    return result


def _same_scaled(shown: list[float], expected: list[float], scales: tuple[float, ...], tolerance: float) -> bool:
    """``shown`` (any order) is ``expected`` times one of ``scales``, each value within ``tolerance``
    (absolute, in the shown unit: the page rounds)."""
    values = sorted(shown)
    return len(values) == len(expected) and any(
        all(abs(v - e * k) <= tolerance + 1e-9 for v, e in zip(values, expected, strict=True)) for k in scales)
