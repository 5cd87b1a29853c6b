"""A real headless Chromium (Debian's package, driven by Playwright) walks the platform as a user would:
first-run setup → upload the astronaut → the case page with the aligned crop; a non-image shows an
error; several faces show a picker; a case is deleted after confirmation; logout.

The server is the real `gestaltlens serve` in a subprocess with the embedded defaults (SQLite, data dir).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from tests.browser_support import JOB_WAIT_S, Server, first_run_setup, wait_js
from tests.conftest import encode


def test_setup_upload_review_and_delete_in_a_real_browser(
    server: Server, browser, tmp_path: Path, astronaut_rgb: np.ndarray
) -> None:
    photo = tmp_path / "astronaut.jpg"
    photo.write_bytes(encode(astronaut_rgb, "JPEG", quality=90))
    pair = tmp_path / "two-people.jpg"
    pair.write_bytes(encode(np.ascontiguousarray(np.concatenate([astronaut_rgb, astronaut_rgb[:, ::-1]], 1))))
    notes = tmp_path / "notes.jpg"  # a text file with an image's name: type is decided by content
    notes.write_text("this is not a photo\n" * 50)

    page = browser.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))

    # First run: the login page sends us to setup, which needs the code from the server console.
    first_run_setup(page, server)
    assert "No cases yet" in page.content()

    # A non-image is refused with a readable message, and nothing is created.
    page.goto(server.url + "/cases/new")
    page.set_input_files("#photo-input", str(notes))
    error = page.locator("#upload-error")
    error.wait_for(state="visible")  # decided from the file's first bytes, before any upload or preview
    assert "not" in error.inner_text().lower() and "jpeg" in error.inner_text().lower()
    assert page.locator("#preview").is_hidden() and page.locator("#upload-button").is_disabled()

    # BMP and TIFF, which the server takes, are taken here too (the page refused them once); TIFF without a
    # preview, since browsers cannot draw it.
    for fmt, suffix in (("BMP", "bmp"), ("TIFF", "tif")):
        other = tmp_path / f"astronaut.{suffix}"
        other.write_bytes(encode(astronaut_rgb, fmt))
        page.set_input_files("#photo-input", str(other))
        wait_js(page, "!document.getElementById('upload-button').disabled")
        assert page.locator("#upload-error").is_hidden(), fmt
        assert page.locator("#preview").is_visible() is (fmt == "BMP"), fmt
    assert "cannot preview TIFF" in page.locator("#upload-status").inner_text()

    # Several faces: the page shows them; clicking one uploads again with that face.
    page.set_input_files("#photo-input", str(pair))
    page.click("#upload-button")
    page.locator("#face-picker rect.face-choice").first.wait_for(state="visible")
    assert page.locator("#face-picker rect.face-choice").count() == 2
    page.locator("#face-picker rect.face-choice").nth(1).click()
    page.wait_for_url(re.compile(r"/cases/[0-9a-f]{32}$"))

    # The astronaut: upload and see the case page with the aligned crop.
    page.goto(server.url + "/cases/new")
    page.set_input_files("#photo-input", str(photo))
    page.fill("#pseudonym", "P-browser")
    page.click("#upload-button")
    page.wait_for_url(re.compile(r"/cases/[0-9a-f]{32}$"))
    crop = page.locator("#aligned-crop")
    crop.wait_for(state="visible")
    wait_js(page, "document.getElementById('aligned-crop').complete")
    assert crop.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [112, 112]
    assert page.locator("svg circle.lm").count() == 10  # 5 on the photo, 5 on the crop
    assert "P-browser" in page.content()

    # The list shows both cases; delete one after confirming.
    page.goto(server.url + "/cases")
    assert page.locator("table.cases tbody tr").count() == 2
    page.click("text=P-browser")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("button.danger")
    page.wait_for_url(re.compile(r"/cases$"))
    assert page.locator("table.cases tbody tr").count() == 1

    page.click("text=Log out")
    page.wait_for_url(re.compile(r"/login"))
    page.goto(server.url + "/cases")
    page.wait_for_url(re.compile(r"/login"))

    csp = [p for p in problems if "Content Security Policy" in p or "Refused" in p]
    assert csp == [], csp


def test_comparison_view_in_a_real_browser(server: Server, browser, tmp_path: Path) -> None:
    """A clinician runs the default panel from the case page and works the comparison view's controls."""
    from app.explain.registry import DEFAULT_PANEL
    from app.synth.generate import generate_one

    photo = tmp_path / "face.jpg"
    photo.write_bytes(generate_one(seed=5150, class_id="syn_d", index=0, severity=1.0).jpeg)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    failed: list[str] = []
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    first_run_setup(page, server)
    page.goto(server.url + "/cases/new")
    page.set_input_files("#photo-input", str(photo))
    page.click("#upload-button")
    page.wait_for_url(re.compile(r"/cases/[0-9a-f]{32}$"))

    # The panel loads with the default methods ticked and the top-ranked syndrome as the target.
    page.locator(".explain-form").wait_for(state="visible")
    assert page.locator(".explain-form input[name=methods]:checked").count() == len(DEFAULT_PANEL)
    page.click(".explain-form button[type=submit]")
    page.locator(".map-card").first.wait_for(state="attached")
    page.wait_for_function(f"() => document.querySelectorAll('.map-card.state-done').length === {len(DEFAULT_PANEL)}",
                           timeout=JOB_WAIT_S * 1000)
    page.locator("a:has-text('Download figure')").wait_for(state="visible")
    page.wait_for_function(
        "() => [...document.querySelectorAll('.heat-crop')].every(i => i.complete && i.naturalWidth)")
    assert page.locator(".map-card .cbar img").count() == len(DEFAULT_PANEL)

    heat = page.locator(".map-card .heat-crop").first
    before = float(heat.evaluate("el => getComputedStyle(el).opacity"))
    page.locator("body").click(position={"x": 5, "y": 5})
    page.keyboard.press("]")
    assert float(heat.evaluate("el => getComputedStyle(el).opacity")) > before
    page.keyboard.press("[")
    page.keyboard.press("[")
    assert float(heat.evaluate("el => getComputedStyle(el).opacity")) < before
    page.keyboard.press("o")
    assert heat.evaluate("el => getComputedStyle(el).visibility") == "hidden"
    page.keyboard.press("o")
    assert heat.evaluate("el => getComputedStyle(el).visibility") == "visible"

    # On the full photo: the warped-back heat layer is shown over the photo.
    page.check("input[name=map-space][value=photo]")
    photo_heat = page.locator(".map-card .heat-photo").first
    photo_heat.wait_for(state="visible")
    page.wait_for_function("() => { const i = document.querySelector('.map-card .heat-photo');"
                           " return i.complete && i.naturalWidth > 112; }")
    page.check("input[name=map-space][value=crop]")

    # Click a map for the large view.
    page.locator(".map-card.state-done").nth(2).click()
    dialog = page.locator("#map-dialog")
    dialog.wait_for(state="visible")
    assert dialog.locator(".heat-crop").evaluate("el => el.getBoundingClientRect().width") > 300
    dialog.locator("button:has-text('Close')").click()
    dialog.wait_for(state="hidden")

    csp = [p for p in problems if "Content Security Policy" in p or "Refused" in p]
    assert csp == [], csp
    assert failed == [], failed
    assert problems == [], problems
