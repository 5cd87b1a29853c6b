"""Two participants take an attention study in a real browser (Chromium, the real `gestaltlens serve`): one
moves the sharp window with the mouse, the other with the keyboard; a participant stops and resumes; the
admin sees both complete, the results page and the CSV of their pseudo-fixations."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

from tests.browser_support import PASSWORD, Server, first_run_setup, log_in, watch

PARTICIPANTS = ("viewer-one", "viewer-two")
SECONDS = 2


def _view_with_mouse(page) -> None:
    page.click("#attention-begin")
    box = page.locator("#attention-canvas").bounding_box()
    assert box
    for k in range(SECONDS * 10 + 4):  # dwell on the left eye region, then the mouth region
        x = box["x"] + box["width"] * (0.38 if k < SECONDS * 5 else 0.5)
        y = box["y"] + box["height"] * (0.42 if k < SECONDS * 5 else 0.7)
        page.mouse.move(x + (k % 3), y)
        page.wait_for_timeout(100)


def _view_with_keyboard(page) -> None:
    page.keyboard.press("Enter")  # starts the viewing; the canvas takes the focus
    page.wait_for_timeout(200)
    for key in ["ArrowUp", "ArrowUp", "ArrowLeft"]:
        page.keyboard.press(key)
    page.wait_for_timeout(SECONDS * 500)
    page.keyboard.press("Shift+ArrowDown")
    page.wait_for_timeout(SECONDS * 500 + 400)


def test_two_participants_take_an_attention_study_in_the_browser(server: Server, browser, tmp_path: Path) -> None:
    from app.synth.generate import generate_one

    problems: list[str] = []
    admin = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    watch(admin, problems)
    first_run_setup(admin, server)
    for name in PARTICIPANTS:
        admin.goto(server.url + "/admin/users")
        add = admin.locator("form.add-user")
        add.locator("input[name=username]").fill(name)
        add.locator("input[name=password]").fill(PASSWORD)
        add.locator("select[name=role]").select_option("clinician")
        admin.once("dialog", lambda dialog: dialog.accept())
        add.locator("button[type=submit]").click()
        admin.locator("#users td", has_text=name).first.wait_for()
    for i in range(2):
        photo = tmp_path / f"face-{i}.jpg"
        photo.write_bytes(generate_one(seed=9090 + i, class_id="syn_c", index=0, severity=1.0).jpeg)
        admin.goto(server.url + "/cases/new")
        admin.set_input_files("#photo-input", str(photo))
        admin.fill("#pseudonym", f"A-{i + 1}")
        admin.click("#upload-button")
        admin.wait_for_url(re.compile(r"/cases/[0-9a-f]{32}$"))

    admin.click("nav >> text=Attention")
    admin.wait_for_url(re.compile(r"/attention$"))
    admin.fill("#attention-name", "Browser attention pilot")
    for box in admin.locator("input[name=cases]").all():
        box.check()
    admin.fill("#attention-participants", ", ".join(PARTICIPANTS))
    admin.fill("input[name=seconds]", str(SECONDS))
    admin.click("#new-attention-form button[type=submit]")
    admin.wait_for_url(re.compile(r"/attention/[0-9a-f]{32}$"))
    study_id = admin.url.rsplit("/", 1)[1]

    # Participant one: the mouse, both photos in one go.
    one = log_in(browser, server, PARTICIPANTS[0], problems)
    one.goto(server.url + "/attention")
    one.click("text=Start")
    one.wait_for_url(re.compile(rf"/attention/{study_id}/cases/[12]$"))
    first = one.url.rsplit("/", 1)[1]  # the first photo of this participant's own order
    assert "Photo 1 of 2" in one.locator("h1").inner_text()
    assert "sharp window follows your mouse" not in one.content()  # the instructions live on the study page
    _view_with_mouse(one)
    one.wait_for_url(re.compile(rf"/attention/{study_id}/cases/{3 - int(first)}$"), timeout=15_000)
    assert "Photo 2 of 2" in one.locator("h1").inner_text()
    _view_with_mouse(one)
    one.wait_for_url(re.compile(rf"/attention/{study_id}$"), timeout=15_000)
    assert "2/2 photos viewed" in one.locator("#attention-progress").inner_text()

    # Participant two: the keyboard; stops after the first photo and resumes from the study page.
    two = log_in(browser, server, PARTICIPANTS[1], problems)
    two.goto(f"{server.url}/attention/{study_id}")
    assert "arrow keys" in two.content()
    two.click("#attention-start")
    two.wait_for_url(re.compile(rf"/attention/{study_id}/cases/[12]$"))
    first = two.url.rsplit("/", 1)[1]
    _view_with_keyboard(two)
    two.wait_for_url(re.compile(rf"/attention/{study_id}/cases/{3 - int(first)}$"), timeout=15_000)
    two.goto(f"{server.url}/attention/{study_id}")  # leaves; comes back later
    assert "1/2 photos viewed" in two.locator("#attention-progress").inner_text()
    assert two.locator("#attention-start").inner_text() == "Resume"
    two.click("#attention-start")
    two.wait_for_url(re.compile(rf"/attention/{study_id}/cases/{3 - int(first)}$"))
    _view_with_keyboard(two)
    two.wait_for_url(re.compile(rf"/attention/{study_id}$"), timeout=15_000)
    two.goto(f"{server.url}/attention/{study_id}/cases/{first}")
    assert two.locator("#attention-already").is_visible()  # a photo is viewed once

    admin.goto(f"{server.url}/attention/{study_id}")
    members = admin.locator("#attention-members").inner_text()
    assert members.count("2/2") == 2, members
    exported = admin.request.get(f"{server.url}/api/v1/attention-studies/{study_id}/fixations.csv").text()
    rows = list(csv.DictReader(io.StringIO(exported)))
    by_person: dict[str, set[str]] = {}
    for row in rows:
        by_person.setdefault(row["participant"], set()).add(row["case"])
    assert len(by_person) == 2 and all(len(c) == 2 for c in by_person.values()), by_person
    assert all(float(r["duration_ms"]) >= 100 for r in rows)
    admin.goto(f"{server.url}/gaze?study={study_id}")
    assert admin.locator("#gaze-results").is_visible()
    assert f"{len(rows)} fixations" in admin.locator("#gaze-results").inner_text()
    assert not problems, problems
