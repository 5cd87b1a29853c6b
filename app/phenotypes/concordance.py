"""Region concordance of a case's attribution maps with the regions its entered terms concern (issue 23).

For each finished map drawn on the case's own crop (newest per method and target), the metric of
:mod:`app.evaluate.concordance`: the share of its positive relevance in the regions the present HPO terms name
(:func:`app.phenotypes.service.suggested_regions`, ancestors included) beside those regions' area share, the
chance level. Read from the explanations domain's stored maps; nothing is stored.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from app.cases.models import Case
from app.evaluate.concordance import region_concordance

MAX_MAPS = 40


def map_concordance(session: Session, *, case: Case, store: Any, regions: list[str]) -> list[dict[str, Any]]:
    """``[{explanation_id, method, label, target, mode, share, area_share, lift}]``; empty without regions."""
    if not regions:
        return []
    from app.explanations.service import explanations_for_case, method_label, read_map

    seen: set[tuple[str, str, str]] = set()
    rows = []
    for row in explanations_for_case(session, case_id=case.id):  # newest first
        key = (row.method, row.target_id, row.objective)
        if row.state != "done" or not row.map_path or row.subject or key in seen:
            continue
        seen.add(key)
        try:
            values = read_map(store.read(row.map_path))
        except (OSError, ValueError):
            continue  # a map file gone missing shows no number rather than failing the page
        result = region_concordance(values, regions)
        rows.append({"explanation_id": row.id, "method": row.method, "label": method_label(row.method),
                     "target": row.target_name, "objective": row.objective, "mode": row.mode,
                     **(result.to_dict() if result else {"regions": regions, "share": None, "area_share": None,
                                                         "lift": None})})
        if len(rows) >= MAX_MAPS:
            break
    return rows
