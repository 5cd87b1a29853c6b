"""The Similar patients panel and the Matches page in a real browser (issue 22): two photos of one generated
patient find each other on the case page and on the Matches page; confirming and sharing one for matching
is a recorded click, and a confirmed case leaves the unsolved pairs."""

from __future__ import annotations

import re
import time
from pathlib import Path

from app.synth.generate import generate_one
from tests.browser_support import WAIT_S, Server, first_run_setup, upload_photo, wait_js, watch


def test_similar_patients_panel_and_matches_page(server: Server, browser, tmp_path: Path) -> None:
    first, again = tmp_path / "first.jpg", tmp_path / "again.jpg"
    first.write_bytes(generate_one(seed=2201, class_id="syn_d", index=4, severity=1.0).jpeg)
    again.write_bytes(generate_one(seed=2201, class_id="syn_d", index=4, severity=0.8).jpeg)
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    problems: list[str] = []
    watch(page, problems)
    first_run_setup(page, server)
    one = upload_photo(page, server, first, "P-one")
    two = upload_photo(page, server, again, "P-two")

    # the case page's panel names the other case, with a compare link
    panel = page.locator("#similar table.similar-table")
    panel.wait_for(state="visible")
    row = panel.locator("tbody tr").first
    assert "P-one" in row.inner_text()
    assert row.locator("a.compare-link").get_attribute("href") == f"/cases/{two}/compare?reference=case:{one}"
    assert "diagnosis is confirmed" in page.locator("#share-state").inner_text()  # not shareable yet

    # the Matches page lists the unsolved pair under the measured threshold, with the plot
    page.click("nav >> text=Matches")
    page.wait_for_url(re.compile(r"/matches$"))
    assert "false-match rate" in page.locator("#threshold-note").inner_text()
    table = page.locator("table.matches-table")
    assert table.locator("tbody tr").count() == 1 and {"P-one", "P-two"} <= set(
        table.locator("tbody tr td a").all_inner_texts())
    wait_js(page, "document.querySelector('#matches img').complete")
    assert page.locator("#matches img").evaluate("img => img.naturalWidth") > 0

    # confirm P-one's diagnosis, then share it for matching from the panel. The panel's first load is answered
    # before the diagnosis but the answer is held back until after it: the reload the diagnosis asks for must
    # still follow that slow first load, not be lost behind it
    held: list = []

    def hold_first(route) -> None:
        if held:
            route.continue_()
        else:
            held.append((route, route.fetch()))

    page.route(f"**/cases/{one}/similar", hold_first)
    page.goto(server.url + f"/cases/{one}")
    deadline = time.monotonic() + WAIT_S
    while not held:  # Playwright calls the handler while the test waits on the page
        assert time.monotonic() < deadline, "the panel never loaded"
        page.wait_for_timeout(50)
    assert "Loading" in page.locator("#similar").inner_text()
    page.locator("#diagnosis input[name=name]").fill("Ultra-rare face syndrome")
    page.locator("#diagnosis input[name=omim]").fill("OMIM:612345")
    page.locator("#diagnosis form:has(input[name=name]) button[type=submit]").click()
    page.locator("#diagnosis button:has-text('Clear')").wait_for()  # recorded
    route, stale = held[0]
    route.fulfill(response=stale)  # the first load's answer, from before the diagnosis
    page.unroute(f"**/cases/{one}/similar")
    page.locator("#share-toggle").wait_for(state="visible")  # the panel reloads when the diagnosis changes
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#share-toggle")
    wait_js(page, "document.getElementById('share-state').innerText.includes('is shared')")
    assert page.locator("#share-toggle").inner_text() == "Stop sharing for matching"

    # a confirmed case is no longer an unsolved pair
    page.goto(server.url + "/matches")
    assert page.locator("#no-matches").is_visible()
    assert problems == [], problems
