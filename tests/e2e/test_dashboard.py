"""The dashboard in a real headless browser: from a FAILED saga to a retry clicked on its page.

The browser is Debian's ``chromium`` driven by Playwright at ``/usr/bin/chromium``
(``scripts/ensure-chromium.sh`` installs it); Playwright's own browser download is
never used. Screenshots land in ``tests/artifacts/screenshots``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import BrowserContext, Page, async_playwright, expect

from tests.e2e.conftest import System
from tests.support import ADMIN_TOKEN, wait_for

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parents[1] / "artifacts" / "screenshots"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TERMINAL = ("COMPLETED", "COMPENSATED", "FAILED")
STEPS = ["reserve_inventory", "authorize_payment", "approve_order", "notify_customer"]
# Three payment attempts answered "unavailable" with 0.2 s backoff: FAILED in about a
# second; the margin covers a slow machine.
FAILED_WITHIN_S = 40.0
UI_TIMEOUT_MS = 30_000


@pytest.fixture
def chromium() -> Path:
    """Debian's chromium; fails (never skips) when it is missing."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: run scripts/ensure-chromium.sh (as root it installs"
            " Debian's chromium with apt-get) so the dashboard can be tested in a browser"
        )
    return CHROMIUM


@pytest.fixture
async def browser(chromium: Path, tmp_path: Path) -> AsyncIterator[BrowserContext]:
    """A headless chromium with a fresh profile."""
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=str(chromium),
            args=CHROMIUM_ARGS,
            # Headless through --headless=new above, not Playwright's own flag.
            headless=False,
            viewport={"width": 1440, "height": 900},
            device_scale_factor=1,
        )
        try:
            yield context
        finally:
            await context.close()


async def _place(api: httpx.AsyncClient, customer: str, sku: str, cents: int) -> dict[str, Any]:
    response = await api.post(
        "/orders",
        json={
            "customer_id": customer,
            "items": [{"sku": sku, "quantity": 1, "unit_price_cents": cents}],
        },
    )
    assert response.status_code == 202, response.text
    placed: dict[str, Any] = response.json()
    return placed


async def _ended(api: httpx.AsyncClient, saga_id: str) -> dict[str, Any]:
    async def saga() -> dict[str, Any]:
        body: dict[str, Any] = (await api.get(f"/sagas/{saga_id}")).json()
        return body

    return await wait_for(
        saga, until=lambda s: s["status"] in TERMINAL, within=FAILED_WITHIN_S, what="saga ended"
    )


async def _some_history(api: httpx.AsyncClient, admin: dict[str, str], sku: str) -> None:
    """A few completed sagas and a compensated one, so the overview has something to show."""
    response = await api.put(
        "/admin/customers/c-ui-broke", json={"credit_limit_cents": 1}, headers=admin
    )
    assert response.status_code == 200, response.text
    placed = [await _place(api, f"c-ui-{i}", sku, 500) for i in range(3)]
    placed.append(await _place(api, "c-ui-broke", sku, 500))
    ended = [await _ended(api, p["saga_id"]) for p in placed]
    assert [s["status"] for s in ended] == ["COMPLETED"] * 3 + ["COMPENSATED"], ended


async def _failed_saga(
    api: httpx.AsyncClient, admin: dict[str, str], sku: str, customer: str
) -> dict[str, Any]:
    """An order whose payment step ran out of attempts: its saga is FAILED."""
    response = await api.put("/admin/faults/payment", json={"mode": "unavailable"}, headers=admin)
    assert response.status_code == 200, response.text
    placed = await _place(api, customer, sku, 1250)
    failed = await _ended(api, placed["saga_id"])
    assert failed["status"] == "FAILED", failed
    return placed


async def _shot(page: Page, name: str) -> None:
    await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


async def test_retry_a_failed_saga_from_the_dashboard(
    api: httpx.AsyncClient,
    admin_headers: dict[str, str],
    system: System,
    browser: BrowserContext,
) -> None:
    sku, customer = f"UI-{uuid.uuid4().hex[:8]}", f"c-ui-{uuid.uuid4().hex[:8]}"
    response = await api.put(
        f"/admin/inventory/{sku}", json={"available": 100}, headers=admin_headers
    )
    assert response.status_code == 200, response.text
    try:
        await _some_history(api, admin_headers, sku)
        placed = await _failed_saga(api, admin_headers, sku, customer)
        response = await api.put(
            "/admin/faults/payment", json={"mode": "ok"}, headers=admin_headers
        )
        assert response.status_code == 200, response.text
        saga_id = placed["saga_id"]

        page = browser.pages[0] if browser.pages else await browser.new_page()
        page.set_default_timeout(UI_TIMEOUT_MS)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
        page.on(
            "console",
            lambda msg: errors.append(f"console: {msg.text}") if msg.type == "error" else None,
        )

        # The token is asked for once, then every view uses it.
        await page.goto(f"{system.api_url}/ui/")
        await page.get_by_test_id("token-input").fill(ADMIN_TOKEN)
        await page.get_by_test_id("token-save").click()

        # Overview: counts by status, throughput chart, outbox backlog, dead letters.
        overview = page.get_by_test_id("overview")
        await expect(overview).to_be_visible()
        failed_count = page.get_by_test_id("count-FAILED").locator(".card-count")
        await expect(failed_count).not_to_have_text("0")
        await expect(page.get_by_test_id("throughput-chart")).to_be_visible()
        await expect(page.get_by_test_id("throughput-chart").locator("rect").first).to_be_attached()
        await expect(page.get_by_test_id("outbox-backlog")).to_contain_text("orchestrator")
        await expect(page.get_by_test_id("dead-letters")).to_contain_text(
            f"{system.settings.namespace}.payment.dead"
        )
        await _shot(page, "01-overview")

        # List filtered by status, then by status and customer: the saga is there.
        await page.get_by_role("link", name="Sagas", exact=True).click()
        await page.get_by_test_id("filter-status").select_option("FAILED")
        await page.get_by_test_id("filter-apply").click()
        row = page.locator(f'[data-testid="saga-row"][data-saga-id="{saga_id}"]')
        await expect(row).to_be_visible()
        await page.get_by_test_id("filter-customer_id").fill(customer)
        await page.get_by_test_id("filter-apply").click()
        await expect(page.get_by_test_id("saga-row")).to_have_count(1)
        await expect(row).to_contain_text("FAILED")
        await expect(row).to_contain_text(customer)
        assert "customer_id=" in page.url and "status=FAILED" in page.url
        await _shot(page, "02-saga-list-failed-by-customer")

        # The saga page: header, timeline with a lane per step, failed attempts marked.
        await row.click()
        await expect(page.get_by_test_id("saga-status")).to_have_text("FAILED")
        timeline = page.get_by_test_id("timeline")
        await expect(timeline).to_be_visible()
        for step in STEPS:
            await expect(timeline.get_by_test_id(f"lane-{step}")).to_be_attached()
        failed_bars = timeline.locator('[data-purpose="action"][data-outcome="failed"]')
        await expect(failed_bars).to_have_count(3)
        await expect(page.get_by_test_id("failure-reason")).to_contain_text("authorize_payment")
        await expect(page.get_by_test_id("messages")).to_contain_text("AuthorizePayment")
        await expect(page.get_by_test_id("retry-button")).to_be_enabled()
        # Before the pivot a FAILED saga may also be aborted.
        await expect(page.get_by_test_id("abort-button")).to_be_enabled()
        await _shot(page, "03-saga-failed")

        # Retry from the page; it shows the saga running again, then COMPLETED.
        await page.get_by_test_id("retry-button").click()
        await expect(page.get_by_test_id("action-notice")).to_contain_text("Retry accepted")
        await expect(page.get_by_test_id("saga-status")).to_have_text("COMPLETED")
        await expect(timeline.locator('[data-marker="admin"]')).to_have_count(1)
        await expect(page.get_by_test_id("retry-button")).to_be_disabled()
        await expect(page.get_by_test_id("history")).to_contain_text("admin_retry")
        await _shot(page, "04-saga-completed-after-retry")

        saga = (await api.get(f"/sagas/{saga_id}")).json()
        assert saga["status"] == "COMPLETED", saga
        assert errors == []
    finally:
        await api.put("/admin/faults/payment", json={"mode": "ok"}, headers=admin_headers)


async def test_dashboard_endpoints_need_the_admin_token(api: httpx.AsyncClient) -> None:
    for path in ("/admin/overview", "/admin/sagas/search", f"/admin/sagas/{uuid.uuid4()}/timeline"):
        response = await api.get(path)
        assert response.status_code == 401, (path, response.text)
    page = await api.get("/ui/")
    assert page.status_code == 200
    assert 'type="module"' in page.text
    redirect = await api.get("/ui")
    assert redirect.status_code == 307
    assert redirect.headers["location"].endswith("/ui/")


async def test_search_filters_and_pages_newest_first(
    api: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    sku, customer = f"UI-{uuid.uuid4().hex[:8]}", f"c-ui-{uuid.uuid4().hex[:8]}"
    response = await api.put(
        f"/admin/inventory/{sku}", json={"available": 10}, headers=admin_headers
    )
    assert response.status_code == 200, response.text
    placed = [await _place(api, customer, sku, 100) for _ in range(3)]
    newest_first = [p["saga_id"] for p in reversed(placed)]

    async def search(**query: str | int) -> dict[str, Any]:
        response = await api.get("/admin/sagas/search", params=query, headers=admin_headers)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    first = await search(customer_id=customer, limit=2)
    second = await search(customer_id=customer, limit=2, cursor=first["next_cursor"])
    assert [s["saga_id"] for s in first["items"] + second["items"]] == newest_first
    assert second["next_cursor"] is None
    assert {s["customer_id"] for s in first["items"]} == {customer}

    by_order = await search(order_id=placed[1]["order_id"], saga_type="order_fulfillment")
    assert [s["saga_id"] for s in by_order["items"]] == [placed[1]["saga_id"]]
    assert (await search(customer_id=customer, saga_type="no_such_saga"))["items"] == []
    created = [s["created_at"] for s in first["items"]]
    window = await search(customer_id=customer, created_from=created[1], created_to=created[0])
    assert [s["saga_id"] for s in window["items"]] == [newest_first[1]]

    # The search's cursors and GET /admin/sagas's are the same kind.
    legacy = await api.get(
        "/admin/sagas", params={"limit": 1, "cursor": first["next_cursor"]}, headers=admin_headers
    )
    assert legacy.status_code == 200, legacy.text
    for bad in ({"cursor": "not-a-cursor"}, {"created_from": "2025-01-01T00:00:00"}):
        response = await api.get("/admin/sagas/search", params=bad, headers=admin_headers)
        assert response.status_code == 422, (bad, response.text)
