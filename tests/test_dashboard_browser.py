"""The dashboard in a real browser: Debian's chromium, headless, driven by Playwright, opening
``reports/index.html`` of the hand-built workspace of `tests.test_dashboard` from disk
(``file://``): no console error, no script error, no network request, every section visible,
every link opens. No browser is downloaded: without ``/usr/bin/chromium`` the tests skip.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pandas as pd
import pytest

from tests.test_dashboard import HOSTILE, built  # noqa: F401  (the module's workspace fixture)

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
SECTIONS = {"summary": None, "promoted": "Promoted strategies", "paper": "Paper trading", "alerts": "Recent alerts",
            "schedule": "Next scheduled jobs", "runs": "Runs", "llm": "LLM spend", "data": "Data freshness"}

pytestmark = pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"{CHROMIUM} is missing: `make test` installs it "
                                "(apt-get install chromium); no browser is downloaded")


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra: `make test` "
                                   "installs it")
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    """A fresh page that records console messages, script errors, dialogs and requests."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.seen = {"console": [], "errors": [], "dialogs": [], "requests": []}
    page.on("console", lambda m: page.seen["console"].append((m.type, m.text)))
    page.on("pageerror", lambda e: page.seen["errors"].append(str(e)))
    page.on("dialog", lambda d: (page.seen["dialogs"].append(d.message), d.dismiss()))
    page.on("request", lambda r: page.seen["requests"].append(r.url))
    yield page
    context.close()


def test_the_dashboard_opens_from_disk_without_errors_or_network(built, page, tmp_path):  # noqa: F811
    index = built["reports"] / "index.html"
    page.goto(index.as_uri(), wait_until="load")
    assert page.title() == "Spartan dashboard"
    assert [m for m in page.seen["console"] if m[0] == "error"] == [] and page.seen["errors"] == []
    assert page.seen["dialogs"] == [] and page.evaluate("document.scripts.length") == 0, "hostile names stay text"
    assert all(url.startswith("file://") for url in page.seen["requests"]), page.seen["requests"]
    for section, heading in SECTIONS.items():
        located = page.locator(f"[id='{section}']")
        assert located.is_visible(), section
        if heading:
            assert located.inner_text().strip() == heading
    charts = page.locator("svg[role=img]")
    assert charts.count() >= 9, "an equity chart, seven gauges and the LLM spend chart at least"
    equity = page.get_by_role("img", name="Equity: paper against the backtest's expectation").first
    box = equity.bounding_box()
    assert box and box["width"] > 300 and box["height"] > 100, "the chart is drawn at a readable size"
    assert page.get_by_text(f"risk review {HOSTILE}").first.is_visible()
    page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)


def test_every_link_on_the_dashboard_opens(built, page):  # noqa: F811
    index = built["reports"] / "index.html"
    page.goto(index.as_uri(), wait_until="load")
    links = page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)")
    assert len(links) > 20
    targets = []
    for url in links:
        parts = urlsplit(url)
        assert parts.scheme == "file", f"{url}: the page opens from disk, so do its links"
        if parts.fragment and Path(unquote(parts.path)) == index:
            assert page.locator(f"[id='{parts.fragment}']").count() == 1, url
        else:
            targets.append(url)
    assert len(set(targets)) >= 15 and any("/runs/odd%22%3E%3Cb%3Ename%231%3F/" in t for t in targets)
    for url in dict.fromkeys(targets):
        assert Path(unquote(urlsplit(url).path)).is_file(), url
        response = page.goto(url, wait_until="load")  # raises net::ERR_FILE_NOT_FOUND for a missing file
        assert response is None or response.ok, url
        assert page.evaluate("document.readyState") == "complete" and page.seen["errors"] == [], url


def test_a_session_report_link_clicks_through_and_back(built, page):  # noqa: F811
    page.goto((built["reports"] / "index.html").as_uri(), wait_until="load")
    session = built["trades"][-1]["session"]
    page.get_by_role("link", name=session, exact=True).click()
    page.wait_for_load_state("load")
    assert page.url.endswith(f"/paper/trend/{session}/summary.html") and "Paper trading" in page.title()
    page.get_by_role("link", name="dashboard").click()
    page.wait_for_load_state("load")
    assert page.url.endswith("/reports/index.html") and page.title() == "Spartan dashboard"


# ---------------------------------------------------------------- every page at 1,024 and 1,440 px

WIDTHS = (1024, 1440)
# Words the browser split across two lines: any run of letters, digits and underscores whose text
# lies on more than one line (a break at a space, hyphen, slash or bracket is not mid-word). SVG
# text never wraps: left out.
BROKEN_WORDS = """() => {
  const broken = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    if (node.parentElement.closest('svg, script, style')) continue;
    for (const m of node.textContent.matchAll(/[\\p{L}\\p{N}_]{2,}/gu)) {
      const range = document.createRange();
      range.setStart(node, m.index);
      range.setEnd(node, m.index + m[0].length);
      const lines = new Set([...range.getClientRects()].filter(r => r.width > 0).map(r => Math.round(r.top)));
      if (lines.size > 1) broken.push(m[0]);
    }
  }
  return broken;
}"""
CHARTS = """() => [...document.querySelectorAll('svg, img')].filter(e => !e.parentElement.closest('svg'))
  .map(e => { const r = e.getBoundingClientRect(); return [e.getAttribute('aria-label') || e.tagName, r.width, r.height]; })"""


@pytest.fixture(scope="module")
def pages(built):  # noqa: F811
    """The four pages people read, real: the dashboard, a quantstats tearsheet and a validation page
    (written into the promoted run's folder from generated returns) and a paper session's summary."""
    from research_lib._io import read_json, write_json
    from research_lib.reports import write_tearsheet
    from research_lib.reports.validation_page import write_validation_page
    from tests.test_validation_page import validation_record

    index = pd.bdate_range("2012-01-02", periods=1300)
    run = built["made"]["run_dir"]
    record = validation_record(index, run.name)
    rng = np.random.default_rng(3)
    returns = pd.Series(rng.normal(5e-4, 0.01, len(index)), index)
    benchmark = pd.Series(rng.normal(3e-4, 0.011, len(index)), index, name="SP500")
    write_json(run / "validation.json", record)
    report_dir = built["reports"] / "runs" / run.name
    write_validation_page(read_json(run / "validation.json"), report_dir / "validation.html")
    write_tearsheet(returns, benchmark, report_dir / "tearsheet.html", "headline (test) | analyst: none")
    session = built["trades"][-1]["session"]
    return {"dashboard": (built["reports"] / "index.html", 9), "tearsheet": (report_dir / "tearsheet.html", 10),
            "validation": (report_dir / "validation.html", 8),
            "paper summary": (built["reports"] / "paper" / "trend" / session / "summary.html", 3)}


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("name", ["dashboard", "tearsheet", "validation", "paper summary"])
def test_each_page_holds_at_laptop_and_desktop_widths(pages, browser, name, width):
    path, least_charts = pages[name]
    context = browser.new_context(viewport={"width": width, "height": 900})
    page = context.new_page()
    console, requests = [], []
    page.on("console", lambda m: console.append((m.type, m.text)))
    page.on("pageerror", lambda e: console.append(("pageerror", str(e))))
    page.on("request", lambda r: requests.append(r.url))
    try:
        page.goto(path.as_uri(), wait_until="load")
        assert [m for m in console if m[0] in ("error", "pageerror")] == [], f"{name} at {width}px"
        assert all(url.startswith(("file://", "data:")) for url in requests), f"{name} fetched {requests}"
        charts = page.evaluate(CHARTS)
        assert len(charts) >= least_charts, f"{name}: {len(charts)} charts, expected {least_charts} or more"
        assert [c for c in charts if not (c[1] > 0 and c[2] > 0)] == [], f"{name}: every chart has a size"
        scroll, client = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        assert scroll <= client, f"{name} at {width}px overflows horizontally: {scroll} > {client}"
        clipped = page.evaluate("[...document.querySelectorAll('.scroll')].filter(e => e.scrollWidth > e.clientWidth)"
                                ".map(e => e.scrollWidth + ' > ' + e.clientWidth)")
        assert clipped == [], f"{name} at {width}px: a table is wider than its box, its last columns cut off"
        if name != "tearsheet":  # quantstats' own page is not ours to reflow
            assert page.evaluate(BROKEN_WORDS) == [], f"{name} at {width}px breaks words mid-word"
    finally:
        context.close()
