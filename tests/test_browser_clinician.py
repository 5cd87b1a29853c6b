"""A new clinical user's walk through the app in a real Chromium, at 1440×900 and on a 390×844 phone, showing
each defect of issue 11 fixed; then axe-core (``axe-playwright-python``) on every page reachable from the UI.

One server and one walk (each browser test costs a server start-up): setup → users page → a real photo (the
astronaut, flagged out of range on the synthetic-only demo model) and a synthetic face → ranking, target list,
explain form, progress, diagnosis, phenotype → a study with its rating page and viewer → phone layout → axe.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest

from app.synth.generate import generate_one
from tests.browser_support import JOB_WAIT_S, PASSWORD, WAIT_S, Server, first_run_setup, wait_job
from tests.conftest import encode

pytestmark = pytest.mark.browser

DESKTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}
SERIOUS = ("serious", "critical")


def wait_until(page, expression: str, timeout: float = WAIT_S) -> None:
    """Poll a JS expression (Playwright's wait_for_function evaluates strings, which our CSP forbids)."""
    import time

    deadline = time.monotonic() + timeout
    while not page.evaluate(f"() => Boolean({expression})"):
        assert time.monotonic() < deadline, f"timed out waiting for {expression}"
        time.sleep(0.1)


def _luminance(rgb: tuple[float, float, float]) -> float:
    def channel(c: float) -> float:
        c = c / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(c) for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(page, selector: str) -> float:
    """WCAG contrast of an element's text colour against its (first opaque ancestor's) background."""
    colours = page.locator(selector).first.evaluate("""el => {
        const fg = getComputedStyle(el).color;
        let node = el, bg = 'rgba(0, 0, 0, 0)';
        while (node && node.nodeType === 1) {
            bg = getComputedStyle(node).backgroundColor;
            if (!/rgba\\(.*, 0\\)$/.test(bg) && bg !== 'transparent') break;
            node = node.parentElement;
        }
        return [fg, bg];
    }""")
    fg, bg = ([float(x) for x in re.findall(r"[\d.]+", c)[:3]] for c in colours)
    light, dark = sorted((_luminance(tuple(fg)), _luminance(tuple(bg))), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def no_horizontal_overflow(page) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= page.viewport_size["width"] + 1, f"{page.url} is {width}px wide on a phone"


def axe_check(page, where: str) -> list[str]:
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page)
    return [f"{where}: {v['id']} ({v['impact']}): {v['help']} — {[n['target'] for n in v['nodes']][:3]}"
            for v in results.response["violations"] if v["impact"] in SERIOUS]


def crawl_pages(page, server: Server, start: list[str], limit: int = 40) -> list[str]:
    """Every same-origin page linked from the pages visited (one per route shape: ids become {id})."""
    seen_shapes: set[str] = set()
    per_branch: dict[tuple[str, int], int] = {}  # /syndromes/syn_a, /syndromes/syn_b …: a few of each suffice
    queue, pages = list(start), []
    while queue and len(pages) < limit:
        url = queue.pop(0)
        path = urlparse(url).path
        shape = re.sub(r"/[0-9a-f]{32}", "/{id}", re.sub(r"/\d+(?=/|$)", "/{n}", path))
        if shape in seen_shapes or path.startswith(("/api/", "/static/", "/logout")) or re.search(
                r"\.(png|csv|npy|json)$", path):
            continue
        seen_shapes.add(shape)
        branch = (shape.split("/")[1] if "/" in shape else shape, shape.count("/"))
        per_branch[branch] = per_branch.get(branch, 0) + 1
        if per_branch[branch] > 6:
            continue
        response = page.goto(server.url + path + (f"?{urlparse(url).query}" if urlparse(url).query else ""))
        if response is None or response.status >= 400 or "text/html" not in (
                response.headers.get("content-type") or ""):
            continue
        page.wait_for_load_state("networkidle")
        pages.append(path)
        for href in page.eval_on_selector_all("a[href^='/']", "els => els.map(e => e.getAttribute('href'))"):
            if href and not href.startswith("//"):
                queue.append(href.split("#")[0])
    return pages


def test_clinician_walk_fixes_every_defect_and_every_page_passes_axe(
    server: Server, browser, tmp_path: Path, astronaut_rgb: np.ndarray
) -> None:
    problems: list[str] = []
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    violations: list[str] = []

    page.goto(server.url + "/setup")
    violations += axe_check(page, "/setup")
    first_run_setup(page, server)

    # 9. Users page: a new user defaults to clinician, creation asks first, users can be deactivated and reset.
    page.goto(server.url + "/admin/users")
    add = page.locator("form.add-user")
    assert add.locator("select[name=role]").input_value() == "clinician"
    add.locator("input[name=username]").fill("dr-new")
    add.locator("input[name=password]").fill(PASSWORD)
    asked: list[str] = []
    page.once("dialog", lambda d: (asked.append(d.message), d.accept()))
    add.locator("button[type=submit]").click()
    page.locator("#user-dr-new").wait_for()
    assert asked and "Create this account" in asked[0]
    assert page.locator("#user-dr-new td").nth(1).inner_text() == "clinician"
    page.once("dialog", lambda d: d.accept())
    page.locator("#user-dr-new button:has-text('Deactivate')").click()
    page.locator("#user-dr-new td", has_text="deactivated").wait_for()
    page.locator("#user-dr-new summary").click()
    page.locator("#user-dr-new input[name=password]").fill("another long passphrase 7")
    page.once("dialog", lambda d: d.accept())
    page.locator("#user-dr-new button:has-text('Set password')").click()
    page.locator(".status-ok", has_text="New password set for dr-new").wait_for()

    # 10. A text file gets no image preview; the photos go in.
    notes = tmp_path / "notes.jpg"
    notes.write_text("not a photo\n" * 40)
    page.goto(server.url + "/cases/new")
    page.set_input_files("#photo-input", str(notes))
    page.locator("#upload-error").wait_for(state="visible")
    assert page.locator("#preview").is_hidden()
    photo = tmp_path / "astronaut.jpg"
    photo.write_bytes(encode(astronaut_rgb, "JPEG", quality=90))
    page.set_input_files("#photo-input", str(photo))
    page.fill("#pseudonym", "P-real")
    page.click("#upload-button")
    page.wait_for_url(re.compile(r"/cases/[0-9a-f]{32}$"))
    real_case = page.url.rsplit("/", 1)[1]
    synthetic = tmp_path / "synthetic.jpg"
    synthetic.write_bytes(generate_one(seed=5151, class_id="syn_a", index=0, severity=1.0).jpeg)
    page.goto(server.url + "/cases/new")
    page.set_input_files("#photo-input", str(synthetic))
    page.fill("#pseudonym", "P-synth")
    page.click("#upload-button")
    page.wait_for_url(re.compile(r"/cases/[0-9a-f]{32}$"))
    synth_case = page.url.rsplit("/", 1)[1]

    # 2. The real photo is flagged out of range, under the model's intended use; the synthetic face is not.
    page.goto(f"{server.url}/cases/{real_case}")
    flag = page.locator("#ood-flag")
    assert flag.is_visible() and "far from every face the model has seen" in flag.inner_text()
    use = page.locator("#ranking .model-use")
    assert "synthetic" in use.inner_text()
    assert use.bounding_box()["y"] < page.locator("table.ranking").bounding_box()["y"]
    page.goto(f"{server.url}/cases/{synth_case}")
    assert page.locator("#ood-flag").count() == 0 and page.locator("#ood-ok").is_visible()

    # 1. The score column agrees with the order; the classifier's probability is a separate, explained column.
    headers = page.locator("table.ranking th").all_inner_texts()
    assert any("Similarity" in h and "orders the list" in h for h in headers)
    assert any("Classifier probability" in h for h in headers) and "Probability" not in headers
    similarity = [float(t.split()[-1]) for t in page.locator("table.ranking td.score").all_inner_texts()]
    assert similarity == sorted(similarity, reverse=True) and len(similarity) >= 5
    assert "#prob-note" in page.locator("table.ranking th.secondary a").get_attribute("href")
    page.locator("#explanations .explain-form").wait_for()
    options = page.locator("select[name=target] option").all_inner_texts()
    listed = [float(re.search(r"similarity ([\d.]+)", o).group(1)) for o in options if "similarity" in o]
    assert listed == similarity[:len(listed)] and options[0].startswith("1. ")

    # 8. Method descriptions are reachable by keyboard (not only title= tooltips).
    page.locator(".method-guide summary").focus()
    page.keyboard.press("Enter")
    guide = page.locator(".method-guide dl")
    guide.wait_for(state="visible")
    assert "Occlusion" in guide.inner_text() and len(guide.locator("dd").all()) >= 10

    # 3. Explain with no method ticked computes nothing and says why.
    for box in page.locator("input[name=methods]").all():
        box.uncheck()
    page.click(".explain-form button[type=submit]")
    page.locator("#method-error").wait_for(state="visible")
    assert page.locator(".map-card").count() == 0
    page.check("input[name=methods][value=saliency]")
    page.check("input[name=methods][value=gradcam]")
    page.click(".explain-form button[type=submit]")
    page.locator(".map-card.state-done").nth(1).wait_for(timeout=JOB_WAIT_S * 1000)
    first_target = page.locator("select[name=target]").input_value()

    # 8. Colour bars say which end is for and which against; numbers stay inside their cards.
    gradcam = page.locator(".map-card[data-method=gradcam] .cbar")
    assert gradcam.locator(".cbar-end").all_inner_texts() == ["against", "for"]
    for card in page.locator(".map-card figcaption").all():
        assert card.evaluate("el => el.scrollWidth <= el.clientWidth + 1")

    # 3. Another target shows that target's maps (none yet), never the old target's maps under its name.
    other = page.locator("select[name=target] option").nth(1).get_attribute("value")
    assert other != first_target
    page.select_option("select[name=target]", other)
    page.locator(".grid-head strong").filter(has_text=re.compile(".+")).wait_for()
    wait_until(page, "document.querySelectorAll('.map-card').length === 0")
    assert "No maps for this target yet" in page.locator("#explain-grid").inner_text()
    assert not [p for p in problems if "hx-disabled-elt" in p], problems  # the select no longer inherits it

    # 4. Progress counts maps and names the one being computed (deliberately slow SmoothGrad and IG).
    token = page.locator("meta[name=csrf-token]").get_attribute("content")
    body = {"methods": ["saliency", "smoothgrad", "integrated_gradients"], "target": other,
            "params": {"smoothgrad": {"samples": 500}, "integrated_gradients": {"steps": 800}}}
    answer = page.request.post(f"{server.url}/api/v1/cases/{synth_case}/explanations", data=json.dumps(body),
                               headers={"Content-Type": "application/json", "X-CSRF-Token": token,
                                        "Origin": server.url})
    assert answer.status == 202, answer.text()
    page.goto(f"{server.url}/cases/{synth_case}")
    status = page.locator("#job-progress .status")
    pattern = r"[12] of 3 maps · now computing (SmoothGrad|Integrated gradients) · about \d+ s left"
    status.filter(has_text=re.compile(pattern)).wait_for(timeout=JOB_WAIT_S * 1000)
    slow_job = answer.json()["job_id"]

    # 5. The "Clear" diagnosis button is readable (WCAG AA contrast).
    page.select_option("#diagnosis select[name=syndrome_id]", "syn_a")
    page.click("#diagnosis form:has(select) button[type=submit]")
    clear = page.locator("#diagnosis button:has-text('Clear')")
    clear.wait_for()
    assert contrast(page, "#diagnosis button:has-text('Clear')") >= 4.5

    # Phenotype: an HPO term by synonym, shown on the case page.
    page.fill("#hpo-search", "widely spaced eyes")
    page.locator("#hpo-results button", has_text="Hypertelorism").click()
    page.locator("#phenotype .hpo-term", has_text="Hypertelorism").wait_for()

    # 10. The study form raises no CSP errors; 9. a case in a study refuses deletion before the dialog.
    page.goto(server.url + "/studies/new")
    page.fill("#study-name", "Viewer check")
    page.check(f'input[name=cases][value="{synth_case}"]')
    for method in ("saliency", "gradcam"):
        page.check(f"input[name=methods][value={method}]")
    page.check("input[name=raters][value=dr-admin]")
    page.click("#new-study button[type=submit]")
    page.wait_for_url(re.compile(r"/studies/[0-9a-f]{32}$"))
    study = page.url.rsplit("/", 1)[1]
    page.goto(f"{server.url}/cases/{synth_case}")
    delete = page.locator("button:has-text('Delete case')")
    assert delete.is_disabled() and "rating study" in page.locator("#delete-why").inner_text()

    # 7. The rating page: keyboard help above the fold, legend, opacity and overlay controls, an enlarged
    # view at photo resolution with previous / next map, and a synchronised two-map compare.
    page.goto(f"{server.url}/studies/{study}/cases/1")
    page.locator(".rate-card .rate-enlarge").nth(1).wait_for(timeout=JOB_WAIT_S * 1000)
    assert page.locator("#rating-keys").bounding_box()["y"] + 20 < DESKTOP["height"]
    assert page.locator("#map-legend").is_visible() and "against" in page.locator("#map-legend").inner_text()
    assert "Hypertelorism" in page.locator("#case-phenotype").inner_text()
    assert page.locator("#map-A .region-choice label", has_text="Eyes").locator(".suggested").count() == 1
    page.locator("#map-A").focus()
    page.keyboard.press("]")
    assert page.locator("#rating").evaluate("el => el.style.getPropertyValue('--heat-opacity')") == "0.8"
    page.keyboard.press("o")
    assert "overlays-off" in page.locator("#rating").get_attribute("class")
    page.keyboard.press("o")
    page.keyboard.press("e")
    dialog = page.locator("#rate-dialog")
    dialog.wait_for(state="visible")
    heat = dialog.locator("#rate-pane-a .heat")
    wait_until(page, "document.querySelector('#rate-pane-a .heat').naturalWidth > 0")
    assert heat.evaluate("el => el.naturalWidth") > 112  # photo resolution, not the 112-px crop scaled up
    assert page.locator("#rate-dialog-label").inner_text() == "A"
    page.keyboard.press("ArrowRight")
    assert page.locator("#rate-dialog-label").inner_text() == "B"
    page.select_option("#rate-compare", "A")
    dialog.locator("#rate-pane-b").wait_for(state="visible")
    boxes = [dialog.locator(f"#rate-pane-{p} .map-frame").bounding_box() for p in "ab"]
    assert abs(boxes[0]["width"] - boxes[1]["width"]) < 2 and abs(boxes[0]["y"] - boxes[1]["y"]) < 2
    assert "Map A" in dialog.locator("#rate-pane-b figcaption").inner_text()
    assert page.locator("#maps-rated").inner_text() == "0"  # the dialog's keys scored nothing
    page.keyboard.press("Escape")
    dialog.wait_for(state="hidden")

    # 6. Phone: the header wraps (name and Log out stay on screen), photos and tables fit the viewport.
    phone = browser.new_context(viewport=PHONE, storage_state=context.storage_state()).new_page()
    phone.on("pageerror", lambda e: problems.append(str(e)))
    for path in ("/cases", f"/cases/{real_case}", f"/studies/{study}/cases/1", "/admin/users", "/studies/new"):
        phone.goto(server.url + path)
        phone.wait_for_load_state("networkidle")
        for selector in (".who span", ".who button"):
            box = phone.locator(selector).bounding_box()
            assert box and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"] + 1, (path, selector, box)
        no_horizontal_overflow(phone)
    phone.goto(f"{server.url}/cases/{real_case}")
    assert phone.locator("#case-photo").bounding_box()["width"] <= PHONE["width"]

    # Focus is visible: a focused link gets an outline.
    page.goto(server.url + "/cases")
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("none", ""), outline

    # Accessibility: axe-core on every page reachable from the UI (plus the 404 page). Each page is checked once
    # the network is idle, which the slow job's three pollers (1 s each) can deny for as long as it runs.
    assert wait_job(page, server, slow_job)["state"] == "done"
    visited = crawl_pages(page, server, ["/cases", f"/cases/{synth_case}", f"/cases/{real_case}", "/studies",
                                         f"/studies/{study}", f"/studies/{study}/cases/1", "/admin/users",
                                         "/cases/new", "/studies/new", "/syndromes", "/evaluation", "/evaluations"])
    for path in visited:
        page.goto(server.url + path)
        page.wait_for_load_state("networkidle")
        violations += axe_check(page, path)
    page.goto(server.url + "/no-such-page")
    violations += axe_check(page, "404")
    context.clear_cookies()
    page.goto(server.url + "/login")
    violations += axe_check(page, "/login")
    print("axe checked:", visited)
    assert len(visited) >= 8, visited
    assert not violations, "\n".join(violations)
    assert not [p for p in problems if "Content Security Policy" in p or "Refused" in p], problems
