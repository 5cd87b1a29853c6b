"""Make the README's screenshots by driving the real app in Chromium: ``make screenshots`` (or
``python -m tests.screenshots docs/screenshots``).

It starts ``gestaltlens serve`` on a fresh data directory (tests/browser_support.py), creates the
administrator, uploads two generated synthetic faces, computes the default explanation panel, creates a
small blinded rating study, and saves three PNGs at 1440×900: the case page (ranking with the model's
intended use), the explanation grid, and a rating page. Only generated faces are shown; no real person.
Re-run it whenever those pages change.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

from app.synth.generate import generate_one
from tests.browser_support import CHROMIUM, CHROMIUM_FLAGS, Server, first_run_setup, upload_photo

VIEWPORT = {"width": 1440, "height": 900}



def wait_until(page, expression: str, timeout: float = 600.0) -> None:
    """Poll a JS expression (Playwright's wait_for_function evaluates strings, which our CSP forbids)."""
    import time

    deadline = time.monotonic() + timeout
    while not page.evaluate(f"() => Boolean({expression})"):
        assert time.monotonic() < deadline, f"timed out waiting for {expression}"
        time.sleep(0.1)


def make_screenshots(out: Path) -> list[Path]:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gestaltlens-shots-") as tmp:
        tmp_path = Path(tmp)
        server = Server(tmp_path / "data")
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
                page = browser.new_context(viewport=VIEWPORT, device_scale_factor=1).new_page()
                page.set_default_timeout(600_000)  # a loaded shared box: waits wait for a state, generously
                first_run_setup(page, server)
                cases = []
                for i, (cls, severity) in enumerate((("syn_e", 1.0), ("syn_a", 0.9))):
                    photo = tmp_path / f"face-{i}.jpg"
                    photo.write_bytes(generate_one(seed=2024 + i, class_id=cls, index=0, severity=severity).jpeg)
                    cases.append(upload_photo(page, server, photo, f"DEMO-{i + 1:02d}"))
                page.goto(f"{server.url}/cases/{cases[0]}")
                page.locator("#explanations .explain-form").wait_for()
                page.click(".explain-form button[type=submit]")
                page.locator(".map-card.state-done").nth(4).wait_for(timeout=900_000)
                wait_until(page, "!document.querySelector('.map-card.state-queued, .map-card.state-running')")
                shots = []
                page.evaluate("window.scrollTo(0, 0)")
                shots.append(out / "case-page.png")  # photo, crop, intended use and the ranking
                bottom = page.locator("#ranking").bounding_box()
                page.screenshot(path=str(shots[-1]), full_page=True,
                                clip={"x": 0, "y": 0, "width": VIEWPORT["width"],
                                      "height": bottom["y"] + bottom["height"] + 16})
                shots.append(out / "explanation-grid.png")
                page.locator("#explanations").screenshot(path=str(shots[-1]))

                page.goto(server.url + "/studies/new")
                page.fill("#study-name", "Plausibility pilot")
                for case_id in cases:
                    page.check(f'input[name=cases][value="{case_id}"]')
                for method in ("integrated_gradients", "gradcam", "occlusion"):
                    page.check(f"input[name=methods][value={method}]")
                page.check("input[name=raters][value=dr-admin]")
                page.check("input[name=blinded]")
                page.click("#new-study button[type=submit]")
                page.wait_for_url(re.compile(r"/studies/[0-9a-f]{32}$"))
                study = page.url.rsplit("/", 1)[1]
                page.goto(f"{server.url}/studies/{study}/cases/1")
                page.locator(".rate-card .rate-enlarge").nth(2).wait_for(timeout=900_000)
                page.keyboard.press("4")
                page.locator("#map-A .rate-status").filter(has_text="Saved").wait_for()
                page.evaluate("window.scrollTo(0, 0)")
                shots.append(out / "rating-page.png")
                page.screenshot(path=str(shots[-1]), full_page=True,
                                clip={"x": 0, "y": 0, "width": VIEWPORT["width"], "height": 1250})
                browser.close()
        finally:
            server.stop()
    return shots


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/screenshots")
    for path in make_screenshots(target):
        print(f"{path} ({path.stat().st_size // 1024} KiB)")
