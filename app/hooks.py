"""Every cross-domain registration, imported from the top.

Lower domains offer registries and never import the domains above them; each domain registers itself in a
module of its own, and this module imports them all (the web factory and the CLI commands that need them
import it before the first request):

* job kinds — :mod:`app.tasks` (``@handler`` in each domain's ``worker.py``);
* a case's erasure — ``app/<domain>/hooks.py`` (:mod:`app.cases.erasure`: guards, purges, after-commit);
* the case history — ``app/<domain>/history.py`` (:mod:`app.cases.history`);
* a case's ranking — :mod:`app.matching.hooks` (:mod:`app.predictions.references`: the shared cases as
  a second gallery, the embeddings kept from every ranking);
* the case list's "rated" filter — :mod:`app.ratings.hooks` (:mod:`app.cases.marks`).
"""

from __future__ import annotations

import app.cohorts.hooks
import app.diagnoses.history
import app.explanations.history
import app.explanations.hooks
import app.gaze.hooks
import app.matching.hooks
import app.predictions.history
import app.ratings.history
import app.ratings.hooks
import app.studies.hooks
import app.tasks  # noqa: F401
