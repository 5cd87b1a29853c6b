"""In a real Chromium (issue 23): entering HPO terms on a demo case changes its combined ranking on the page,
beside the unchanged face-only ranking, with term bars; marking a term absent pulls a syndrome down."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.synth.generate import generate_one
from tests.browser_support import Server, first_run_setup, upload_photo, watch

pytestmark = pytest.mark.browser


def _column(page, table: str) -> list[str]:
    return page.eval_on_selector_all(f"#{table} tbody tr", "rows => rows.map(r => r.dataset.syndrome)")


def _ranked_for(page, terms: str) -> None:
    """Wait for the rankings computed for exactly ``terms`` (sorted ids, absent ones with a leading "-"): every
    change reloads them, and after quick changes an older reload can still be on the page."""
    page.locator(f"#phenotype-ranking .rank-columns[data-terms='{terms}']").wait_for()


def _case_page(server: Server, browser, tmp_path: Path, problems: list[str], face: bytes, width: int):
    """A logged-in admin on the page of a new case made from ``face`` (console errors go to ``problems``)."""
    page = browser.new_context(viewport={"width": width, "height": 900}).new_page()
    watch(page, problems)
    first_run_setup(page, server)
    photo = tmp_path / "face.jpg"
    photo.write_bytes(face)
    upload_photo(page, server, photo)
    return page


def test_entering_terms_changes_the_combined_ranking(server: Server, browser, tmp_path: Path) -> None:
    problems: list[str] = []
    jpeg = generate_one(seed=4242, class_id="syn_a", index=3).jpeg
    page = _case_page(server, browser, tmp_path, problems, jpeg, 1440)

    page.locator("#no-terms").wait_for()
    _ranked_for(page, "")
    face = _column(page, "rank-face")
    assert _column(page, "rank-combined") == face  # no terms: the combined ranking is the face ranking
    assert page.locator("#synthetic-profiles").is_visible()

    # long philtrum + thin upper lip: synthetic syndrome C's facial terms
    for query, term in (("long philtrum", "HP:0000343"), ("thin upper lip", "HP:0000219")):
        page.fill("#hpo-search", query)
        page.locator(f"#hpo-results input[value='{term}'] ~ button.hpo-add").click()
        page.locator(f"#phenotype li[data-hpo='{term}']").wait_for()
        # the card re-rendered around the search box, which kept what was typed (and its live search); the results
        # came back with the card and say the case holds the term
        assert page.input_value("#hpo-search") == query
        page.locator(f"#hpo-results li[data-held='present'] input[value='{term}']").wait_for(state="attached")
    _ranked_for(page, "HP:0000219 HP:0000343")
    combined = _column(page, "rank-combined")
    page.locator("#term-bars figure[data-syndrome='syn_c']").wait_for()
    assert _column(page, "rank-face") == face  # the face-only ranking is untouched
    assert combined != face and combined.index("syn_c") < face.index("syn_c")
    assert _column(page, "rank-phenotype")[0] == "syn_c"

    # the clinician checked: no micrognathia (syn_g's feature) — syn_g falls in the phenotype ranking
    before = _column(page, "rank-phenotype")
    page.fill("#hpo-search", "micrognathia")
    page.locator("#hpo-results input[value='HP:0000347'] ~ button.hpo-exclude").first.click()
    page.locator("#phenotype li[data-hpo='HP:0000347'][data-excluded='true']").wait_for()
    _ranked_for(page, "HP:0000219 HP:0000343 -HP:0000347")
    after = _column(page, "rank-phenotype")
    assert after.index("syn_g") >= before.index("syn_g") and after[-1] == "syn_g"
    # History names every change, the absent one as absent
    page.locator("#history li", has_text="Micrognathia (HP:0000347), absent").wait_for()
    history = page.locator("#history").inner_text()
    assert history.count("HPO term recorded") == 3 and "Long philtrum (HP:0000343)" in history
    assert not problems, problems


def test_a_second_click_during_an_add_leaves_card_and_search_box_true(server: Server, browser,
                                                                       tmp_path: Path) -> None:
    """A double click, or two results clicked in one moment: the changes go to the server one after the other, and
    one whose button the first answer has replaced is not sent. Before, both went at once, the second answer landed
    on a card already replaced, the search box vanished with it and the card could show a state the server no longer
    held."""
    problems: list[str] = []
    jpeg = generate_one(seed=4243, class_id="syn_c", index=0).jpeg
    page = _case_page(server, browser, tmp_path, problems, jpeg, 1280)
    page.fill("#hpo-search", "philtrum")
    page.locator("#hpo-results button.hpo-add").nth(1).wait_for()
    first = page.eval_on_selector("#hpo-results li input[name=term]", "input => input.value")
    page.evaluate("() => { const b = [...document.querySelectorAll('#hpo-results button.hpo-add')];"
                  " b[0].click(); b[0].click(); b[1].click(); }")
    page.locator(f"#hpo-results li[data-held='present'] input[value='{first}']").wait_for(state="attached")
    _ranked_for(page, first)
    shown = page.eval_on_selector_all("#phenotype li[data-hpo]", "els => els.map(e => e.dataset.hpo)")
    assert shown == [first]
    assert page.locator("#hpo-search").count() == 1 and page.input_value("#hpo-search") == "philtrum"
    page.reload()
    page.locator(f"#phenotype li[data-hpo='{first}']").wait_for()  # the card loads after the page
    assert page.eval_on_selector_all("#phenotype li[data-hpo]", "els => els.map(e => e.dataset.hpo)") == shown
    page.locator("#history li", has_text="HPO term recorded").wait_for()
    assert page.locator("#history li", has_text="HPO term recorded").count() == 1
    assert not problems, problems
