"""The study framework's per-participant orders (app/studies/order.py): blinded labels and permutations that can
be redrawn for an audit from (study seed, member, case) alone."""

from __future__ import annotations

from app.studies.order import draw_order, map_label


def test_map_labels_run_like_spreadsheet_columns() -> None:
    assert [map_label(i) for i in (0, 1, 25, 26, 27, 51, 52, 701, 702)] == [
        "A", "B", "Z", "AA", "AB", "AZ", "BA", "ZZ", "AAA"]
    assert len({map_label(i) for i in range(1000)}) == 1000  # never two items with one label


def test_an_order_is_a_permutation_redrawn_from_its_inputs_alone() -> None:
    methods = [f"method_{i}" for i in range(10)]
    order = draw_order(methods, seed=42, rater_id=3, case_id="c1")
    assert sorted(order) == sorted(methods) and order != methods
    assert draw_order(list(methods), seed=42, rater_id=3, case_id="c1") == order  # the audit's redraw
    # another member, case or study seed gets its own order (10! orders: a repeat among these is not chance)
    others = [draw_order(methods, seed=42, rater_id=4, case_id="c1"), draw_order(methods, seed=42, rater_id=3,
              case_id="c2"), draw_order(methods, seed=43, rater_id=3, case_id="c1")]
    assert all(other != order for other in others)


def test_orders_do_not_favour_a_position() -> None:
    """Over many members each item leads about equally often: a blinded study shows no method first by habit."""
    items = ["a", "b", "c", "d"]
    firsts = [draw_order(items, seed=7, rater_id=member, case_id="case")[0] for member in range(4000)]
    for item in items:
        assert 0.2 < firsts.count(item) / len(firsts) < 0.3, (item, firsts.count(item))
