"""The import structure: no cycle among ``app`` modules, and every package placed by a layer contract.

import-linter (run by ``make test``) holds the layer contracts in ``pyproject.toml``; it checks forbidden
arrows but not cycles between single modules, so this test builds the same graph with grimp (the library
import-linter itself uses; it reads every import statement, function-local ones included) and fails on any
strongly connected component. A throwaway package with a deferred-import cycle shows the check can fail.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]


def import_cycles(graph: grimp.ImportGraph, package: str) -> list[list[str]]:
    """Every import cycle among ``package``'s modules, as sorted strongly connected components.

    Tarjan's algorithm, written out because none of our dependencies offers strongly connected components
    over a grimp graph (networkx only arrives transitively, through torch); iterative, so deep import
    chains cannot hit Python's recursion limit.
    """
    modules = sorted(m for m in graph.modules if m == package or m.startswith(package + "."))
    edges = {m: sorted(n for n in graph.find_modules_directly_imported_by(m) if n in modules) for m in modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for start in modules:
        if start in index:
            continue
        work: list[tuple[str, int]] = [(start, 0)]
        while work:
            node, child = work.pop()
            if child == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            recurse = False
            for position in range(child, len(edges[node])):
                nxt = edges[node][position]
                if nxt not in index:
                    work.append((node, position + 1))
                    work.append((nxt, 0))
                    recurse = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if recurse:
                continue
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in edges[node]:
                    components.append(sorted(component))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return sorted(components)


def describe(graph: grimp.ImportGraph, component: list[str]) -> str:
    """One line per import inside the cycle, with its line number, so the failure says what to cut."""
    members = set(component)
    lines = []
    for importer in component:
        for imported in sorted(graph.find_modules_directly_imported_by(importer) & members):
            details = graph.get_import_details(importer=importer, imported=imported)
            where = ", ".join(f"l.{d['line_number']}" for d in details)
            lines.append(f"  {importer} -> {imported} ({where})")
    return "\n".join(lines)


def test_no_import_cycle_in_app() -> None:
    graph = grimp.build_graph("app", cache_dir=None)
    cycles = import_cycles(graph, "app")
    report = "\n\n".join(f"cycle of {len(c)} modules:\n{describe(graph, c)}" for c in cycles)
    assert not cycles, "import cycles among app modules (deferred imports count too):\n" + report


def test_the_cycle_check_fails_on_a_deferred_import_cycle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "throwaway_cycle"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from throwaway_cycle import b\n")
    (package / "b.py").write_text("def later():\n    from throwaway_cycle import c\n    return c\n")
    (package / "c.py").write_text("import throwaway_cycle.a\n")
    (package / "d.py").write_text("from throwaway_cycle import a\n")  # points into the cycle, not part of it
    monkeypatch.syspath_prepend(str(tmp_path))
    graph = grimp.build_graph("throwaway_cycle", cache_dir=None)
    assert import_cycles(graph, "throwaway_cycle") == [
        ["throwaway_cycle.a", "throwaway_cycle.b", "throwaway_cycle.c"]
    ]
    (package / "b.py").write_text("def later():\n    return None\n")
    sys.modules.pop("throwaway_cycle", None)
    assert import_cycles(grimp.build_graph("throwaway_cycle", cache_dir=None), "throwaway_cycle") == []


def test_every_app_package_is_placed_by_a_layer_contract() -> None:
    """A new top-level package must be named in the contracts, or the layers would silently not cover it."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    named: set[str] = set()
    for contract in config["contracts"]:
        for key in ("source_modules", "forbidden_modules", "layers", "containers", "modules"):
            named.update(str(m).split(" ")[0] for m in contract.get(key, []))
    packages = {
        f"app.{p.stem if p.is_file() else p.name}"
        for p in (ROOT / "app").iterdir()
        if (p.is_dir() and (p / "__init__.py").exists()) or (p.suffix == ".py" and p.stem != "__init__")
    }
    unplaced = sorted(packages - named)
    assert not unplaced, f"packages no import-linter contract names (add them to pyproject.toml): {unplaced}"


def test_tests_mirror_the_domains() -> None:
    """Each domain (the packages the "domains below web" contract names) has its tests in ``tests/<domain>/``,
    so a reader finds a domain's tests where its code is."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (domains,) = [c["source_modules"] for c in config["contracts"] if c["id"] == "domains-below-web"]
    missing = sorted(d for d in domains if not list((ROOT / "tests" / d.removeprefix("app.")).glob("test_*.py")))
    assert not missing, f"domains without a tests/<domain>/test_*.py: {missing}"
