"""The one registry of attribution methods: ids, labels, parameters and their validation.

The ids and their order are fixed by the design (DESIGN.md, HTTP contract). :func:`normalise_params` is
strict and canonical because its result is part of a results-cache key: two requests that mean the same
parameters must produce the same dict, and a typo must be an error rather than a silently ignored key.

The registry alone decides whether a method id exists: :func:`require_methods` (a list of ids from a request,
a study, a CLI option) and :func:`get_method` (one id) raise :class:`UnknownMethod`, which is the neutral
:class:`app.errors.DomainError` (the web layer answers 422 ``unknown_method``) and a ``ValueError`` (what the
ML core's callers have always caught). ``app.errors`` imports only the standard library, so the ML core stays
free of web, domain and database imports.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from app.errors import DomainError
from app.explain.methods import ALL
from app.explain.methods.base import Method, MethodInfo, ParamSpec

__all__ = ["DEFAULT_PANEL", "EXTRA_METHODS", "METHODS", "MethodInfo", "ParamSpec", "UnknownMethod", "get_method",
           "method_info", "normalise_params", "require_methods"]

_BY_ID: dict[str, Method] = {method.info.id: method for method in ALL}

#: Method id → description, in display order.
METHODS: dict[str, MethodInfo] = {method_id: method.info for method_id, method in _BY_ID.items()}

#: Methods outside the default panel: the exact decomposition is an instrument for comparing faces, coarse
#: (7×7) and one forward pass; it is asked for by name.
EXTRA_METHODS: tuple[str, ...] = ("similarity_decomposition",)

#: The panel computed when a user asks for "all methods": the ten attribution methods, in display order.
DEFAULT_PANEL: tuple[str, ...] = tuple(m for m in METHODS if m not in EXTRA_METHODS)


class UnknownMethod(DomainError, ValueError):
    """422 ``unknown_method``: ids the registry does not know (``unknown``); the detail names the known ids."""

    def __init__(self, unknown: Iterable[object], detail: str | None = None) -> None:
        self.unknown = [str(m) for m in unknown]
        super().__init__("unknown_method", detail or f"Unknown method(s): {', '.join(self.unknown)}. "
                                                     f"Known: {', '.join(_BY_ID)}.")


def require_methods(method_ids: Iterable[str]) -> list[str]:
    """``method_ids`` in their order without repeats; UnknownMethod naming every unknown id and the known ones.

    Callers choose their own default for an empty request (the panel, every method, or a refusal) and pass it.
    """
    chosen = list(dict.fromkeys(method_ids))
    unknown = [m for m in chosen if not isinstance(m, str) or m not in _BY_ID]
    if unknown:
        raise UnknownMethod(unknown)
    return chosen


def get_method(method_id: str) -> Method:
    """The full method (description, cost model, compute function); UnknownMethod naming the known ids."""
    if not isinstance(method_id, str) or method_id not in _BY_ID:
        raise UnknownMethod([method_id], f"unknown method {method_id!r}; known: {', '.join(_BY_ID)}")
    return _BY_ID[method_id]


def method_info(method_id: str) -> MethodInfo:
    """Description of one method; ValueError (not KeyError) naming the known ids when it is unknown."""
    return get_method(method_id).info


def normalise_params(method_id: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Defaults merged with ``params``, checked and canonical (sorted keys, plain int/float/str values).

    Raises ValueError for an unknown method, an unknown parameter name, a wrong type or an out-of-range value.
    """
    method = get_method(method_id)
    info = method.info
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise ValueError(f"parameters of {method_id} must be a mapping; got {type(params).__name__}")
    specs = {spec.name: spec for spec in info.params}
    unknown = sorted(str(key) for key in params if key not in specs)
    if unknown:
        known = ", ".join(specs) or "none"
        raise ValueError(f"unknown parameter(s) {', '.join(unknown)} for {method_id}; known: {known}")
    merged = {name: spec.normalise(method_id, params.get(name, spec.default)) for name, spec in specs.items()}
    if method.check is not None:
        method.check(merged)
    return dict(sorted(merged.items()))
