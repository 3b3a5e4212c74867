"""``/dashboard`` in a real browser (Debian's headless Chromium driven by Playwright) against a live modelport: the
numbers and charts move with traffic, a hot swap shows up in the table and the events, the page fits a phone, and
with auth on the page asks for a token and the feed shows only what that token may view."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from server.lifecycle.webhooks import sign
from server.ops.identity import Level
from tests.lifecycle import Live, ScorerRegistry, answer, live, scorers

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)"
    ),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (the dev extra)")
expect = sync_api.expect
expect.set_options(timeout=30_000)

__all__ = ["scorers"]
SECRET = "dashboard-secret"
WAIT_MS = 30_000


@dataclass
class Served:
    server: Live
    champion: str
    """``<name>@champion``, versions 1 and 2 (y = k * x)."""
    endpoint_model: str
    broken: str


@pytest.fixture(scope="module")
def browser() -> Iterator[sync_api.Browser]:
    with sync_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=str(CHROMIUM))
        yield launched
        launched.close()


@pytest.fixture
def page(browser: sync_api.Browser) -> Iterator[sync_api.Page]:
    """A laptop-sized page; the test fails on any uncaught script error in it."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda exc: errors.append(str(exc)))
    yield opened
    context.close()
    assert errors == [], errors


@pytest.fixture(scope="module")
def served(scorers: ScorerRegistry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """Auth off: a model @champion (webhook-driven swaps), a broken version, and a serving endpoint."""
    name, other, broken = (
        scorers.register("dash", [1, 2]),
        scorers.register("dash_ep", [3]),
        scorers.register("dash_broken", [None]),
    )
    settings = scorers.settings(
        tmp_path_factory.mktemp("dashboard"),
        models=(f"models:/{name}@champion", f"models:/{broken}/1"),
        promotion={"poll_interval_s": 0, "webhook_secret": SECRET},
        cost={"cpu_core_per_hour": 0.36},
    )
    with live(settings) as server, server.client() as c:
        entities = [{"entity_name": other, "entity_version": "1", "workload_size": "Small"}]
        created = c.post(
            "/api/2.0/serving-endpoints", json={"name": "dash-ep", "config": {"served_entities": entities}}
        )
        assert created.status_code == 200, created.text
        assert server.components.endpoints.wait_settled("dash-ep", 60)
        yield Served(server, name, other, f"{broken}/1")


def _traffic(served: Served, n: int = 40) -> None:
    with served.server.client() as c:
        for _ in range(n):
            assert c.post(f"/model/{served.champion}/champion/invocations", json=answer()).status_code == 200
            assert c.post("/serving-endpoints/dash-ep/invocations", json=answer()).status_code == 200
        assert c.post(f"/model/{served.champion}/champion/invocations", json={"nope": 1}).status_code == 400


def _points(page: sync_api.Page, chart: str) -> int:
    return int(page.get_attribute(f"#chart-{chart}", "data-points") or 0)


def test_figures_and_charts_follow_traffic(served: Served, page: sync_api.Page) -> None:
    page.goto(served.server.url + "/dashboard")
    row = page.locator(f'#deployments tr[data-key="{served.champion}@champion"]')
    expect(row.locator("td.state")).to_have_text("READY")
    expect(row.locator("td.provider")).not_to_be_empty()
    expect(page.locator("#failures li")).to_contain_text(served.broken)
    expect(page.locator('#events li[data-kind="failed"]')).to_contain_text(served.broken)
    expect(page.locator('#endpoints tr[data-endpoint="dash-ep"]')).to_contain_text(f"{served.endpoint_model}/1")
    expect(page.locator("#chart-rps canvas")).to_have_count(1)
    page.wait_for_function("() => +document.querySelector('#chart-rps').dataset.points >= 1", timeout=WAIT_MS)
    before = _points(page, "rps")

    _traffic(served)
    page.wait_for_function("() => parseFloat(document.querySelector('#now-rps').textContent) > 0", timeout=WAIT_MS)
    cell = f'tr[data-key="{served.champion}@champion"] td.rps'
    page.wait_for_function(
        "(sel) => parseFloat(document.querySelector(sel).textContent) > 0", arg=cell, timeout=WAIT_MS
    )
    page.wait_for_function("() => parseFloat(document.querySelector('#now-p99').textContent) > 0", timeout=WAIT_MS)
    page.wait_for_function(
        "() => window.modelportDashboard.feed().series.rps.some((v) => v > 0)"
        " && window.modelportDashboard.feed().series.error_rate.some((v) => v > 0)"
        " && window.modelportDashboard.feed().series.cost_per_1k.some((v) => v > 0)",
        timeout=WAIT_MS,
    )
    page.wait_for_function(
        f"() => +document.querySelector('#chart-rps').dataset.points > {before}"
        f" && +document.querySelector('#chart-latency').dataset.points > {before}",
        timeout=WAIT_MS,
    )
    expect(page.locator("#now-cost")).to_contain_text("USD")

    page.select_option("#group", "endpoint:dash-ep")  # one chart group per endpoint and model
    page.wait_for_function("() => window.modelportDashboard.feed().group === 'endpoint:dash-ep'", timeout=WAIT_MS)
    page.wait_for_function("() => window.modelportDashboard.feed().series.rps.some((v) => v > 0)", timeout=WAIT_MS)
    assert "group=endpoint" in page.url
    page.wait_for_function(  # the endpoint's row has its own figures
        "() => parseFloat(document.querySelector('tr[data-endpoint=\"dash-ep\"] td.rps').textContent) > 0",
        timeout=WAIT_MS,
    )


def _signed_alias_webhook(name: str, version: str) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(
        {
            "entity": "model_version_alias",
            "action": "created",
            "timestamp": "2026-01-01T00:00:00+00:00",
            "data": {"name": name, "alias": "champion", "version": version},
        }
    ).encode()
    delivery, stamp = str(uuid.uuid4()), str(int(time.time()))
    return body, {
        "Content-Type": "application/json",
        "X-MLflow-Delivery-Id": delivery,
        "X-MLflow-Timestamp": stamp,
        "X-MLflow-Signature": sign(SECRET, delivery, stamp, body),
    }


def test_a_hot_swap_shows_in_the_table_and_the_events(
    served: Served, scorers: ScorerRegistry, page: sync_api.Page
) -> None:
    key = f"{served.champion}@champion"
    page.goto(served.server.url + "/dashboard")
    expect(page.locator(f'#deployments tr[data-key="{key}"] td.version')).to_have_text("1")

    changed = threading.Event()
    served.server.components.service.subscribe(changed.set)
    scorers.move(served.champion, "champion", "2")
    body, headers = _signed_alias_webhook(served.champion, "2")
    with served.server.client() as c:
        assert c.post("/webhooks/mlflow", content=body, headers=headers).json()["status"] == "accepted"
        assert changed.wait(60), "the webhook did not trigger a swap"
        assert c.post(f"/model/{served.champion}/champion/invocations", json=answer()).json()["predictions"] == [4.0]

    row = page.locator(f'#deployments tr[data-key="{key}"]')
    expect(row.locator("td.version")).to_have_text("2")
    expect(row.locator("td.swap")).to_contain_text("v1 → v2")
    swapped = page.locator('#events li[data-kind="swapped"]')
    expect(swapped).to_have_count(1)
    expect(swapped).to_contain_text(key)
    expect(swapped).to_contain_text("v1 → v2")


def test_the_page_fits_a_phone(served: Served, browser: sync_api.Browser) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, device_scale_factor=2)
    try:
        page = context.new_page()
        page.goto(served.server.url + "/dashboard")
        expect(page.locator(f'#deployments tr[data-key="{served.champion}@champion"]')).to_be_visible()
        page.wait_for_function("() => +document.querySelector('#chart-rps').dataset.points >= 1", timeout=WAIT_MS)
        assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth + 1")
        widths = page.evaluate("() => [...document.querySelectorAll('.chart')].map((c) => c.clientWidth)")
        assert widths and all(w <= 390 for w in widths)  # one column of charts
        assert page.evaluate("() => document.querySelector('#chart-rps canvas').getBoundingClientRect().width") <= 390
    finally:
        context.close()


# -- auth on ---------------------------------------------------------------------------------------------------------


@dataclass
class Secured:
    server: Live
    shown: str
    hidden: str
    admin: str
    viewer: str


@pytest.fixture(scope="module")
def secured(scorers: ScorerRegistry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    shown, hidden = scorers.register("dash_shown", [1]), scorers.register("dash_hidden", [1])
    settings = scorers.settings(
        tmp_path_factory.mktemp("dashboard_auth"),
        models=(f"models:/{shown}/1", f"models:/{hidden}/1"),
        auth={"required": True},
    )
    with live(settings) as server:
        tokens = server.components.gate.tokens
        admin = tokens.create("ops", admin=True)
        viewer = tokens.create("viewer", grants={shown: Level.CAN_VIEW})
        yield Secured(server, shown, hidden, admin, viewer)


def test_the_feed_needs_a_caller_and_shows_only_what_it_may_view(secured: Secured) -> None:
    with secured.server.client() as c:
        assert c.get("/dashboard").status_code == 200  # the page and its assets are public
        assert c.get("/dashboard/assets/dashboard.js").status_code == 200
        assert c.get("/dashboard/assets/..%2Fdashboard.py").status_code == 404
        assert c.get("/dashboard/feed.json").status_code == 401
        assert c.get("/dashboard/feed.json", headers={"Authorization": "Bearer mp_nope"}).status_code == 401

        viewer = {"Authorization": f"Bearer {secured.viewer}"}
        feed = c.get("/dashboard/feed.json", headers=viewer).json()
        assert [d["name"] for d in feed["deployments"]] == [secured.shown]
        assert feed["groups"] == [f"model:{secured.shown}"] and feed["group"] == f"model:{secured.shown}"
        assert {e["key"] for e in feed["events"]} == {f"{secured.shown}/1"}
        assert feed["principal"] == "viewer"
        for group in ("all", f"model:{secured.hidden}", "endpoint:nope"):
            assert c.get("/dashboard/feed.json", params={"group": group}, headers=viewer).status_code == 403

        admin = c.get("/dashboard/feed.json", headers={"Authorization": f"Bearer {secured.admin}"}).json()
        assert admin["group"] == "all" and len(admin["deployments"]) == 2


def test_the_page_asks_for_a_token_and_keeps_it_for_the_tab(secured: Secured, page: sync_api.Page) -> None:
    page.goto(secured.server.url + "/dashboard")
    expect(page.locator("#login")).to_be_visible()
    page.fill("#token", "mp_wrong")
    page.click("#login button[type=submit]")
    expect(page.locator("#login")).to_be_visible()
    expect(page.locator("#message")).to_contain_text("refused")

    page.fill("#token", secured.viewer)
    page.click("#login button[type=submit]")
    expect(page.locator(f'#deployments tr[data-model="{secured.shown}"]')).to_be_visible()
    expect(page.locator("#who")).to_contain_text("viewer")
    expect(page.locator(f'#deployments tr[data-model="{secured.hidden}"]')).to_have_count(0)
    assert page.evaluate("() => sessionStorage.getItem('modelport.dashboard.token')") == secured.viewer

    page.reload()  # the token stays for the tab
    expect(page.locator(f'#deployments tr[data-model="{secured.shown}"]')).to_be_visible()
    expect(page.locator("#login")).to_be_hidden()
    page.click("#logout")
    expect(page.locator("#login")).to_be_visible()


def test_the_feed_without_auth_needs_no_token(served: Served) -> None:
    with httpx.Client(base_url=served.server.url) as c:
        r = c.get("/dashboard/feed.json")
        assert r.status_code == 200 and r.json()["auth"] is False and r.json()["group"] == "all"
        assert r.headers["cache-control"] == "no-store"
        page = c.get("/dashboard")
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert c.get("/dashboard", headers={"If-None-Match": page.headers["etag"]}).status_code == 304
