"""The dashboard in a real browser (Debian's Chromium, headless) against a
real `ward indexer` loaded with the test data (see conftest.py).

Each test saves a screenshot of its last page in the artifacts directory.
"""

from __future__ import annotations

import re
import time
import urllib.parse
from datetime import datetime

from playwright.sync_api import expect

from conftest import TOKENS, shot


def url_params(page) -> dict:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlparse(page.url).query))


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def total_text(n: int) -> str:
    return f"{n:,} {'match' if n == 1 else 'matches'}"


def rows(page):
    return page.locator("#results tbody tr.event")


def test_search_by_query(open_page, ward):
    want = ward.search("verb:create")["total"]
    assert want > 10
    page = open_page("/search?range=all")
    page.fill("#query", "verb:create")
    page.press("#query", "Enter")
    expect(page.locator("#total")).to_have_text(total_text(want))
    assert url_params(page)["q"] == "verb:create"
    # A page at most, every row a create.
    assert 0 < rows(page).count() <= 50
    for what in rows(page).locator("td.what").all_inner_texts():
        assert what.startswith("create "), what
    expect(page.locator("#histogram rect.bar").first).to_be_visible()


def test_query_error_is_shown_at_its_position(open_page, ward):
    status, body = ward.request("GET", "/api/v1/search?q=" + urllib.parse.quote("verb:(create"))
    assert status == 400 and body["kind"] == "query"
    page = open_page("/search?range=all&q=" + urllib.parse.quote("verb:(create"))
    error = page.locator("#query-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text(body["error"])
    # The query is shown with the failing position marked.
    code = error.locator("code.error-at").inner_text()
    assert code == "verb:(create" or code.rstrip() == "verb:(create"
    marked_at = page.evaluate(
        "() => { const c = document.querySelector('#query-error code');"
        " const m = c.querySelector('mark'); let n = 0;"
        " for (const x of c.childNodes) { if (x === m) return n; n += x.textContent.length; } return -1; }"
    )
    assert marked_at == body["position"]
    expect(page.locator("#query")).to_have_attribute("aria-invalid", "true")
    expect(rows(page)).to_have_count(0)


def test_url_round_trips_query_and_range(open_page, ward):
    q = 'verb:list AND user.username:"system:admin"'
    start, end = "2017-09-11T19:00:00Z", "2017-09-11T21:00:00Z"
    want = ward.search(q, start=start, end=end)["total"]
    assert want > 0
    page = open_page("/search")
    page.fill("#query", q)
    page.click(".range-btn")
    page.fill("#range-start", start)
    page.fill("#range-end", end)
    page.click(".picker form.abs button[type=submit]")
    expect(page.locator("#total")).to_have_text(total_text(want))
    params = url_params(page)
    assert params == {"q": q, "start": start, "end": end}
    shared = page.url
    page.goto("about:blank")
    page.goto(shared)
    expect(page.locator("#query")).to_have_value(q)
    expect(page.locator(".range-btn")).to_contain_text("2017-09-11 19:00:00")
    expect(page.locator("#total")).to_have_text(total_text(want))
    # Back to a quick range: the URL says so.
    page.click(".range-btn")
    page.click(".picker button[data-range='all']")
    expect(page).to_have_url(re.compile(r"range=all"))
    assert "start" not in url_params(page)


def test_histogram_drag_zooms_into_a_range(open_page, ward):
    start, end = "2017-09-11T19:50:00Z", "2017-09-11T20:40:00Z"
    page = open_page(f"/search?q=source:audit&start={start}&end={end}")
    before = ward.search("source:audit", start=start, end=end)["total"]
    expect(page.locator("#total")).to_have_text(total_text(before))
    chart = page.locator("#histogram svg")
    expect(chart).to_be_visible()
    box = chart.bounding_box()
    plot_left, plot_right = box["x"] + 40, box["x"] + box["width"] - 4
    span = plot_right - plot_left
    y = box["y"] + box["height"] / 2
    page.mouse.move(plot_left + span * 0.15, y)
    page.mouse.down()
    page.mouse.move(plot_left + span * 0.4, y, steps=5)
    page.mouse.move(plot_left + span * 0.75, y, steps=5)
    page.mouse.up()
    expect(page).to_have_url(re.compile(r"start=2017-09-11T19%3A5[0-9]"))
    params = url_params(page)
    s, e = parse_time(params["start"]), parse_time(params["end"])
    assert parse_time(start) < s < e < parse_time(end), params
    after = ward.search("source:audit", start=params["start"], end=params["end"])["total"]
    assert 0 < after < before
    expect(page.locator("#total")).to_have_text(total_text(after))
    for t in rows(page).locator("td.time").all_inner_texts():
        when = parse_time(t.replace(" ", "T") + "Z")
        assert s <= when < e, (t, params)


def test_clicking_a_facet_value_filters_for_and_against_it(open_page, ward):
    all_audit = ward.search("source:audit")["total"]
    lists = ward.search("source:audit AND verb:list")["total"]
    assert 0 < lists < all_audit
    page = open_page("/search?q=source:audit&range=all")
    expect(page.locator("#total")).to_have_text(total_text(all_audit))
    value = page.locator('.facet[data-field="verb"] button.value[data-value="list"]')
    expect(value).to_contain_text(str(lists))
    value.click()
    expect(page.locator("#query")).to_have_value("source:audit AND verb:list")
    expect(page.locator("#total")).to_have_text(total_text(lists))
    assert url_params(page)["q"] == "source:audit AND verb:list"
    for what in rows(page).locator("td.what").all_inner_texts():
        assert what.startswith("list "), what
    shot(page, "facet-for")

    page.goto(ward.base + "/search?q=source:audit&range=all")
    page.locator('.facet[data-field="verb"] button.neg[data-value="list"]').click()
    expect(page.locator("#query")).to_have_value("source:audit AND NOT verb:list")
    expect(page.locator("#total")).to_have_text(total_text(all_audit - lists))
    for what in rows(page).locator("td.what").all_inner_texts():
        assert not what.startswith("list "), what


def test_expanding_a_row_shows_the_event_as_json(open_page, ward):
    event = ward.loaded["falco"][0]
    audit_id = event["auditID"]
    page = open_page(f"/search?range=all&q=auditID:{audit_id}")
    expect(rows(page).first).to_be_visible()
    detail = page.locator("#results tr.detail").first
    expect(detail).to_be_hidden()
    rows(page).first.locator("button.expand").click()
    expect(detail).to_be_visible()
    pre = detail.locator("pre.json")
    expect(pre).to_contain_text(f'"auditID": "{audit_id}"')
    expect(pre).to_contain_text(f'"verb": "{event["verb"]}"')
    # Formatted: one key per line, keys marked for colouring.
    assert pre.inner_text().count("\n") > 10
    expect(pre.locator(".j-key").first).to_be_visible()
    # Pivots to the timelines of the event's entities.
    expect(detail.locator('a.chip[href^="/timeline?entity=user"]').first).to_be_visible()
    rows(page).first.locator("button.expand").press("Enter")
    expect(detail).to_be_hidden()


def test_acknowledge_and_close_an_alert(open_page, ward):
    open_alerts = ward.get("/api/v1/alerts?status=open&limit=200")["alerts"]
    assert open_alerts, "the built-in rules raise alerts on the fixtures"
    page = open_page("/alerts")
    first = page.locator("article.alert").first
    expect(first).to_be_visible()
    alert_id = first.get_attribute("data-id")
    expect(first.locator(".badge.status")).to_have_text("open")
    # The level and rule summary, and the link to the events in Search.
    expect(page.locator(".levels .level-count").first).to_be_visible()
    expect(page.locator("table.by-rule tbody tr").first).to_be_visible()
    assert "auditID" in urllib.parse.unquote(first.locator("a.button").get_attribute("href"))
    first.locator("button.expand").click()
    expect(first.locator(".alert-events details.event").first).to_be_attached()

    first.locator('button[data-action="acknowledged"]').click()
    expect(first.locator(".badge.status")).to_have_text("acknowledged")
    alert = ward.get(f"/api/v1/alerts/{alert_id}")
    assert alert["status"] == "acknowledged"
    assert alert["history"][-1]["by"] == "alice", "the token's label"
    expect(first.locator('button[data-action="acknowledged"]')).to_have_count(0)
    shot(page, "alert-acknowledged")

    first.locator('button[data-action="closed"]').click()
    expect(first.locator(".badge.status")).to_have_text("closed")
    assert ward.get(f"/api/v1/alerts/{alert_id}")["status"] == "closed"

    # The Search link opens the triggering events.
    first.locator("a.button").click()
    expect(page).to_have_url(re.compile(r"/search\?q=auditID"))
    expect(rows(page).first).to_be_visible()


def test_timeline_of_a_user_with_alerts_and_pivots(open_page, ward):
    entity = "user:system:admin"
    want = ward.get("/api/v1/timeline?entity=" + urllib.parse.quote(entity) + "&limit=1")["total"]
    assert want > 0
    page = open_page("/timeline?entity=" + urllib.parse.quote(entity))
    items = page.locator("#timeline li.tl-item")
    expect(items.first).to_be_visible()
    expect(page.locator(".timeline-main h2")).to_contain_text(f"{want} events")
    times = items.locator(".time").all_inner_texts()
    assert times == sorted(times), "oldest first"
    # Alerts raised on its events.
    expect(page.locator(".timeline-alerts li").first).to_be_visible()
    expect(page.locator("li.tl-item.has-alert").first).to_be_visible()
    # What it touched; each entity a pivot.
    ip = page.locator('aside.related a[href^="/timeline?entity=ip"]').first
    expect(ip).to_be_visible()
    ip_text = ip.inner_text()
    ip.click()
    expect(page).to_have_url(re.compile(r"entity=ip"))
    assert url_params(page)["entity"] == f"ip:{ip_text}"
    expect(page.locator("#timeline li.tl-item").first).to_be_visible()
    expect(page.locator("#entity-kind")).to_have_value("ip")


def test_open_a_timeline_from_the_form(open_page, ward):
    page = open_page("/timeline")
    page.select_option("#entity-kind", "user")
    page.fill("#entity-value", "minikube-user")
    page.click("form.page-head button[type=submit]")
    expect(page).to_have_url(re.compile(r"entity=user%3Aminikube-user"))
    expect(page.locator("#timeline li.tl-item").first).to_be_visible()


def test_live_tail_shows_new_events_until_stopped(open_page, ward):
    page = open_page("/search?q=cluster:tailtest")
    toggle = page.locator("#tail-toggle")
    toggle.click()
    expect(toggle).to_have_attribute("data-state", "live")
    expect(toggle).to_have_attribute("aria-pressed", "true")
    first = ward.new_event("tailtest", "tailed-1")
    ward.send_audit([first], cluster="tailtest")
    row = page.locator(f'#results tr.event[data-id*="{first["auditID"]}"]')
    expect(row).to_be_visible(timeout=15_000)
    expect(row.locator("td.what")).to_contain_text("get pods live/tailed-1")
    shot(page, "live-tail-on")

    toggle.click()
    expect(toggle).to_have_attribute("data-state", "off")
    second = ward.new_event("tailtest", "tailed-2")
    ward.send_audit([second], cluster="tailtest")
    # Searchable, so the tail would have had it by now.
    deadline = time.monotonic() + 10
    while ward.search(f"auditID:{second['auditID']}")["total"] < 1:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(1.5)
    expect(page.locator(f'#results tr.event[data-id*="{second["auditID"]}"]')).to_have_count(0)
    expect(row).to_be_visible()


def test_viewer_signs_in_and_is_not_offered_triage(open_page, ward):
    page = open_page("/alerts", role=None)
    expect(page.locator("form.signin")).to_be_visible()
    page.fill("#token", "not-a-valid-token-000000")
    page.click("form.signin button[type=submit]")
    expect(page.locator("form.signin .msg")).to_contain_text("not valid")
    page.fill("#token", TOKENS["viewer"])
    page.click("form.signin button[type=submit]")
    expect(page.locator("#who")).to_contain_text("victor")
    expect(page.locator("#who")).to_contain_text("viewer")
    expect(page.locator("article.alert").first).to_be_visible()
    expect(page.locator("article.alert button[data-action]")).to_have_count(0)
    # Search links are still offered.
    expect(page.locator("article.alert a.button").first).to_be_visible()
    alert_id = page.locator("article.alert").first.get_attribute("data-id")
    page.click('nav a[data-page="rules"]')
    expect(page.locator("#rules tbody tr").first).to_be_visible()
    expect(page.locator("#hunt-start")).to_have_count(0)
    shot(page, "viewer-rules")
    page.click('nav a[data-page="alerts"]')
    expect(page.locator("article.alert").first).to_be_visible()
    expect(page.locator("article.alert button[data-action]")).to_have_count(0)
    shot(page, "viewer-alerts")
    # The server refuses what the page does not offer.
    status, _ = ward.request(
        "POST", f"/api/v1/alerts/{alert_id}/status", "viewer", {"status": "closed"}
    )
    assert status == 403
    status, _ = ward.request(
        "POST", "/api/v1/rules/hunt", "viewer",
        {"start": "2017-01-01T00:00:00Z", "end": "2021-01-01T00:00:00Z"},
    )
    assert status == 403
    page.click("#sign-out")
    expect(page.locator("form.signin")).to_be_visible()
    expect(page.locator("header.top nav")).to_be_hidden()


def test_rules_page_lists_rules_and_runs_a_retro_hunt(open_page, ward):
    rules = ward.get("/api/v1/rules")
    page = open_page("/rules")
    expect(page.locator("#rules tbody tr")).to_have_count(rules["count"])
    hit = next(r for r in rules["rules"] if r["alerts"] > 0)
    row = page.locator(f'#rules tbody tr[data-id="{hit["id"]}"]')
    expect(row).to_contain_text(hit["title"])
    expect(row).to_contain_text("built-in")
    page.fill("#hunt-start", "2017-09-01T00:00:00Z")
    page.fill("#hunt-end", "2020-05-01T00:00:00Z")
    page.click("form.hunt-form button[type=submit]")
    out = page.locator("#hunt-out")
    expect(out).to_contain_text("audit events checked", timeout=20_000)
    expect(out.locator("table.hunt-alerts tbody tr").first).to_be_visible()


def test_slash_focuses_the_query_bar(open_page, ward):
    page = open_page("/search?range=all")
    expect(page.locator("#total")).not_to_be_empty()
    page.evaluate("() => document.activeElement && document.activeElement.blur()")
    page.keyboard.press("/")
    assert page.evaluate("() => document.activeElement.id") == "query"
    expect(page.locator("#query")).to_have_value("")
    # From another page, `/` opens Search with the bar focused.
    page.click('nav a[data-page="alerts"]')
    expect(page.locator("article.alert").first).to_be_visible()
    page.keyboard.press("/")
    expect(page).to_have_url(re.compile(r"/search"))
    assert page.evaluate("() => document.activeElement.id") == "query"


def test_field_completion_and_query_history(open_page, ward):
    page = open_page("/search?range=all")
    page.click("#query")
    page.keyboard.type("objectRef.subr")
    option = page.locator("#suggestions li.field", has_text="objectRef.subresource")
    expect(option).to_be_visible()
    page.keyboard.press("Tab")
    expect(page.locator("#query")).to_have_value("objectRef.subresource:")
    page.keyboard.type("exec")
    page.keyboard.press("Enter")
    want = ward.search("objectRef.subresource:exec")["total"]
    expect(page.locator("#total")).to_have_text(total_text(want))
    # The query is in the history: an empty bar offers it.
    page.fill("#query", "")
    page.locator("#query").blur()
    page.click("#query")
    recent = page.locator("#suggestions li.history", has_text="objectRef.subresource:exec")
    expect(recent).to_be_visible()
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Enter")
    expect(page.locator("#query")).to_have_value("objectRef.subresource:exec")


def test_dark_theme_toggle_is_remembered(open_page, ward):
    page = open_page("/search?range=all")
    html = page.locator("html")
    expect(html).to_have_attribute("data-theme", "light")
    light_bg = page.evaluate("() => getComputedStyle(document.body).backgroundColor")
    page.click("#theme-toggle")
    expect(html).to_have_attribute("data-theme", "dark")
    dark_bg = page.evaluate("() => getComputedStyle(document.body).backgroundColor")
    assert light_bg != dark_bg

    def luminance(rgb: str) -> float:
        r, g, b = (int(x) for x in re.findall(r"\d+", rgb)[:3])
        return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255

    assert luminance(light_bg) > 0.8 and luminance(dark_bg) < 0.2
    page.reload()
    expect(html).to_have_attribute("data-theme", "dark")
    expect(rows(page).first).to_be_visible()
    rows(page).first.locator("button.expand").click()
    # The system preference decides until the user picks.
    other = open_page("/search?range=all", color_scheme="dark")
    expect(other.locator("html")).to_have_attribute("data-theme", "dark")


def test_nothing_overflows_horizontally_at_1280x800(open_page, ward):
    def check(page, what):
        width = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1], (what, width)

    page = open_page("/search?range=all&q=source:audit")
    expect(rows(page).first).to_be_visible()
    for i in range(3):
        rows(page).nth(i).locator("button.expand").click()
    for field in ["userAgent", "objectRef.name", "sourceIPs"]:
        page.click(f'.facet-name[data-field="{field}"]')
    expect(page.locator('.facet[data-field="userAgent"] button.value').first).to_be_visible()
    check(page, "search")
    page.goto(ward.base + "/alerts?status=all")
    expect(page.locator("article.alert").first).to_be_visible()
    page.locator("article.alert button.expand").first.click()
    expect(page.locator(".alert-detail").first).to_be_visible()
    check(page, "alerts")
    page.goto(ward.base + "/timeline?entity=user:minikube-user")
    expect(page.locator("#timeline li.tl-item").first).to_be_visible()
    page.locator("#timeline details summary").first.click()
    check(page, "timeline")
    page.goto(ward.base + "/rules")
    expect(page.locator("#rules tbody tr").first).to_be_visible()
    check(page, "rules")
