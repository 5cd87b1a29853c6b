"""In a real browser: a map card's "Deletion curve & context" loads on click, and the Evaluation page opens."""

from __future__ import annotations

import re
from pathlib import Path

from tests.browser_support import JOB_WAIT_S, Server, first_run_setup, upload_photo


def test_deletion_curve_one_click_away_and_the_evaluation_page(server: Server, browser, tmp_path: Path) -> None:
    from app.synth.generate import generate_one

    photo = tmp_path / "face.jpg"
    photo.write_bytes(generate_one(seed=5151, class_id="syn_g", index=0, severity=1.0).jpeg)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(str(e)))
    first_run_setup(page, server)
    upload_photo(page, server, photo)
    page.locator(".explain-form").wait_for(state="visible")
    page.evaluate("""() => document.querySelectorAll('.explain-form input[name=methods]').forEach(
        box => { box.checked = ['gradcam', 'integrated_gradients'].includes(box.value); })""")
    # The job's progress answers are held until the curve is open: the end of the job must not close it
    held: list = []
    holding = [True]

    def progress(route) -> None:
        if holding[0]:
            held.append(route)
        else:
            route.continue_()

    page.route("**/jobs/*/progress", progress)
    page.click(".explain-form button[type=submit]")
    page.wait_for_function("() => document.querySelectorAll('.map-card.state-done').length === 2",
                           timeout=JOB_WAIT_S * 1000)

    card = page.locator(".map-card[data-method=gradcam]")
    card.locator(".map-faithfulness summary").click()
    card.locator("text=Deletion gap").wait_for()
    card.locator(".map-faithfulness").evaluate("el => { el.dataset.opened = 'yes'; }")
    holding[0] = False
    for route in held:
        route.continue_()
    page.unroute("**/jobs/*/progress")
    page.locator("a:has-text('Download figure')").wait_for()  # the job's end has been shown
    assert card.locator(".map-faithfulness[open][data-opened=yes]").count() == 1  # the same, still open
    assert card.locator("text=Deletion gap").is_visible()
    page.wait_for_function("() => [...document.querySelectorAll('.map-faithfulness img')].some("
                           "i => i.complete && i.naturalWidth > 100)")
    assert "context" in card.locator(".map-faithfulness").inner_text()
    assert "sum error" in page.locator(".map-card[data-method=integrated_gradients]").inner_text()

    page.click("nav >> text=Evaluation")
    page.wait_for_url(re.compile(r"/models/demo/evaluation$"))
    assert "No scorecard" in page.content() and page.locator("#evaluate-submit").is_visible()
    assert not problems, problems
