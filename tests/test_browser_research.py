"""A real headless Chromium on the research pages: import the demo cohort with the CLI, open the Syndromes page
and a syndrome's composite and syndrome-wise maps, then compare a case with its nearest gallery face (maps on
both faces) and with another case, using the viewer controls (overlay toggle, opacity, large view)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.browser_support import JOB_WAIT_S, WAIT_S, Server, first_run_setup

QUICK = {"gradcam", "similarity_decomposition", "saliency"}


def _loaded(page, selector: str) -> bool:
    """Every image matching ``selector`` has loaded with real pixels (waits up to the bound, then says False)."""
    script = ("s => { const els = [...document.querySelectorAll(s)]; "
              "return els.length > 0 && els.every(e => e.complete && e.naturalWidth > 0); }")
    try:
        page.wait_for_function(script, arg=selector, timeout=WAIT_S * 1000)
    except Exception:
        return False
    return True


def _tick_only(page, wanted: set[str]) -> None:
    for box in page.locator("input[name=methods]").all():
        box.set_checked(box.get_attribute("value") in wanted)


def test_syndromes_and_compare_pages_in_a_real_browser(server: Server, browser, tmp_path: Path) -> None:
    page = browser.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(str(e)))
    first_run_setup(page, server)
    env = {**os.environ, "GESTALTLENS_DATA_DIR": str(tmp_path / "data")}
    env.pop("GESTALTLENS_DATABASE_URL", None)
    imported = subprocess.run([sys.executable, "-m", "app.cli", "demo-cohort", "dr-admin", "--per-syndrome", "5",
                               "--syndromes", "syn_a"], env=env, capture_output=True, text=True, timeout=JOB_WAIT_S)
    assert imported.returncode == 0, imported.stderr
    assert "created 5 synthetic case(s)" in imported.stdout

    # Syndromes page: syn_a passes the floor, the others have no cases
    page.goto(server.url + "/syndromes")
    row = page.locator("tr[data-syndrome=syn_a]")
    assert "5" in row.inner_text() and "available" in row.inner_text()
    assert "below the floor" in page.locator("tr[data-syndrome=syn_b]").inner_text()
    row.locator("a").click()
    page.wait_for_url(re.compile(r"/syndromes/syn_a$"))
    page.click("#cohort-submit")
    page.wait_for_selector("#composites", timeout=JOB_WAIT_S * 1000)
    assert _loaded(page, "#composites img")
    assert page.locator(".cohort-grid .map-card").count() == 28  # 10 × mean and composite map, 8 signed agreements
    page.wait_for_function("() => [...document.querySelectorAll('.cohort-grid img.heat')].every(i => i.complete)")
    page.keyboard.press("o")
    assert "overlays-off" in (page.get_attribute("#explanations", "class") or "")
    page.keyboard.press("o")
    page.locator(".cohort-grid .map-card").first.click()
    assert page.locator("#map-dialog").evaluate("d => d.open")
    page.keyboard.press("Escape")
    page.goto(server.url + "/syndromes/syn_b")
    assert "Too few patients" in page.locator("#too-few").inner_text()

    # Compare a case with the nearest gallery face of its top-ranked syndrome, from the case page's ranking
    cases = page.request.get(server.url + "/api/v1/cases").json()["items"]
    first, second = cases[0]["id"], cases[1]["id"]
    page.goto(server.url + f"/cases/{first}")
    page.locator("a.compare-link").first.click()
    page.wait_for_url(re.compile(r"/compare\?reference=nearest"))
    assert page.locator("#no-maps").count() == 1
    _tick_only(page, QUICK)
    page.click("#compare-submit")
    page.wait_for_function("() => document.querySelectorAll('.map-card.state-done').length === 6",
                           timeout=JOB_WAIT_S * 1000)
    assert re.search(r"cosine similarity\s+0\.\d{3}", page.locator("#similarity").inner_text())
    assert page.locator("h2.compare-side").count() == 2  # the gallery face is re-rendered: both sides drawn
    assert _loaded(page, ".compare-faces img")
    page.fill("#map-opacity", "0.3")
    page.dispatch_event("#map-opacity", "input")
    assert page.locator("#opacity-value").inner_text() == "30%"
    page.locator(".map-card.state-done").first.click()
    assert page.locator("#map-dialog").evaluate("d => d.open")
    page.keyboard.press("Escape")
    assert page.locator("a[download]", has_text="Download figure").count() == 1

    # …and with another case
    page.goto(server.url + f"/cases/{first}/compare?reference=case:{second}")
    _tick_only(page, {"occlusion"})
    page.click("#compare-submit")
    page.wait_for_function("() => document.querySelectorAll('.map-card.state-done').length === 2",
                           timeout=JOB_WAIT_S * 1000)
    assert page.locator("h2.compare-side").count() == 2
    assert problems == []
