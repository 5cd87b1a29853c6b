"""Reading a whole pickled module (``torch.save(model)``) without running any code from it.

GestaltMatcher-Arc's training code saves whole modules: its ``MyArcFace`` holds an onnx2torch
``GraphModule`` (pickled as ``torch.fx.graph_module.reduce_graph_module`` with the forward's *Python
source*, which ``torch.load`` would ``exec``), ``features`` and ``classifier``. ``torch.load`` of such a
file runs whatever the pickle names. This reader never does:

* the zip archive of ``torch.save`` is opened here, and storages are read as plain bytes;
* ``find_class`` resolves only (a) our own inert tensor-rebuilding functions (replacing torch's
  ``_rebuild_tensor_v2`` / ``_rebuild_parameter``), (b) plain containers (``OrderedDict``, ``set``, …) and
  storage/dtype names, and (c) *known module classes* — ``torch.nn`` layers, ``torch.fx`` graph modules,
  onnx2torch converters, GestaltMatcher-Arc's and arcface_torch's model classes, our own iResNet — each
  mapped to an inert :class:`StubModule` that only records its state. No constructor, ``__setstate__``
  or ``forward`` of the real class ever runs, and the graph module's code is kept as text, never executed;
* anything else (``os.system``, ``builtins.eval``, ``subprocess.Popen``, an unknown class…) is refused
  with :class:`UnsafePickle` naming it;
* a tensor's declared size, stride and offset are checked against the bytes its storage really holds
  *before* anything is materialised (a 700-byte file once declared one float viewed as 40000×40000 with
  stride 0: 6.4 GB), each storage is read once, and all tensors together may not materialise more than
  twice the archive's storage bytes; compressed entries (``torch.save`` never compresses) are refused, so a
  small file cannot inflate either.

What comes out is a tree of stubs whose ``_parameters`` / ``_buffers`` / ``_modules`` hold the tensors,
in the order the modules were registered (for traced and converted graphs: execution order).
"""

from __future__ import annotations

import collections
import io
import math
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["KNOWN_MODULE_PREFIXES", "StubModule", "UnsafePickle", "load_module_tree"]

#: Modules whose classes may appear in a checkpoint; each becomes an inert stub.
KNOWN_MODULE_PREFIXES: tuple[str, ...] = (
    "torch.nn.modules.",  # Conv2d, BatchNorm2d, PReLU, Linear, Sequential, Dropout, Flatten, Module…
    "torch.nn.parameter",
    "torch.fx.",  # GraphModule and its tracer bookkeeping (the code is kept as text, never run)
    "onnx2torch.",  # the service converts its ONNX networks with onnx2torch
    "lib.models.",  # GestaltMatcher-Arc's MyArcFace
    "backbones.",  # insightface arcface_torch's iresnet
    "app.nets.iresnet",  # ours
)

_STORAGE_DTYPES: dict[str, torch.dtype] = {
    "FloatStorage": torch.float32, "HalfStorage": torch.float16, "DoubleStorage": torch.float64,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}
_DTYPE_NAMES = {"float32", "float16", "float64", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool",
                "float", "half", "double", "long", "int"}
_CONTAINERS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "list"): list,
    ("builtins", "tuple"): tuple,
    ("builtins", "dict"): dict,
    ("torch", "Size"): tuple,
}


_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}


class UnsafePickle(ValueError):
    """The checkpoint names something outside tensors, containers and known module classes."""


class StubModule:
    """Stands in for a module class: records the pickled state and nothing else."""

    qualified_name = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.__dict__["_stub_args"] = (args, kwargs)

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict | type(None)):
            state = {**(state[0] or {}), **(state[1] or {})}  # (dict, slots) form
        if isinstance(state, dict):
            self.__dict__.update(state)

    def __repr__(self) -> str:
        return f"<stub {self.qualified_name}>"


_stub_classes: dict[str, type[StubModule]] = {}


def _stub_class(qualified: str) -> type[StubModule]:
    if qualified not in _stub_classes:
        _stub_classes[qualified] = type(qualified.rsplit(".", 1)[-1], (StubModule,), {"qualified_name": qualified})
    return _stub_classes[qualified]


class _Budget:
    """Bytes the tensors of one archive may still materialise."""

    def __init__(self, limit: int) -> None:
        self.left = limit

    def spend(self, nbytes: int) -> None:
        if nbytes > self.left:
            raise UnsafePickle("the checkpoint's tensors would take more memory than its storages hold")
        self.left -= nbytes


class _Storage:
    def __init__(self, dtype: torch.dtype, raw: bytes, budget: _Budget) -> None:
        self.dtype = dtype
        self.raw = raw
        self.budget = budget


def _ints(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, tuple | list) or len(value) > 16 or \
            not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
        raise UnsafePickle(f"a tensor's {what} is not a short list of non-negative whole numbers")
    return tuple(value)


def _rebuild_tensor(storage: _Storage, offset: int, size: Any, stride: Any, *_rest: Any) -> torch.Tensor:
    """A tensor from raw storage bytes (what ``torch._utils._rebuild_tensor_v2`` does, without torch.load),
    after checking that the declared layout lies within the storage and declares no more elements than it
    holds (a broadcast view, stride 0, is how a tiny file asks for gigabytes; no checkpoint needs one)."""
    if not isinstance(storage, _Storage):
        raise UnsafePickle("a tensor refers to something that is not a storage")
    size, stride = _ints(size, "size"), _ints(stride, "stride")
    if len(size) != len(stride) or not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise UnsafePickle("a tensor's size, stride and offset do not fit together")
    itemsize = torch.empty(0, dtype=storage.dtype).element_size()
    capacity = len(storage.raw) // itemsize
    elements = math.prod(size)
    if elements:
        last = offset + sum((n - 1) * st for n, st in zip(size, stride, strict=True))
        if last >= capacity:
            raise UnsafePickle(f"a tensor of shape {size} reaches element {last} of a storage holding {capacity}")
        if elements > capacity:
            raise UnsafePickle(f"a tensor declares {elements} elements (shape {size}, stride {stride}) but its "
                               f"storage holds {capacity}: refused before materialising it")
    storage.budget.spend(elements * itemsize)
    flat = torch.frombuffer(bytearray(storage.raw), dtype=storage.dtype) if storage.raw else \
        torch.empty(0, dtype=storage.dtype)
    return torch.as_strided(flat, size, stride, offset).clone()


def _rebuild_parameter(data: torch.Tensor, *_rest: Any) -> torch.Tensor:
    if not isinstance(data, torch.Tensor):
        raise UnsafePickle("a parameter does not hold a tensor")
    return data


def _rebuild_from_type(func: Any, _new_type: Any, args: tuple[Any, ...], _state: Any) -> Any:
    if func not in (_rebuild_tensor, _rebuild_parameter):
        raise UnsafePickle("a tensor subclass is rebuilt by something other than a tensor")
    return func(*args)


def _reduce_graph_module(body: dict[str, Any], _import_block: str = "", *_rest: Any) -> StubModule:
    """``torch.fx``'s ``reduce_graph_module`` would exec the saved forward; keep the body as data."""
    stub = _stub_class("torch.fx.graph_module.GraphModule")()
    stub.__setstate__(dict(body) if isinstance(body, dict) else {})
    return stub


def _reconstructor(cls: Any, base: Any, state: Any) -> Any:
    if not (isinstance(cls, type) and issubclass(cls, StubModule)):
        raise UnsafePickle("copyreg._reconstructor asked to build something other than a known module")
    obj = cls()
    if state is not None:
        obj.__setstate__(state)
    return obj


_FUNCTIONS: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type,
    ("torch.fx.graph_module", "reduce_graph_module"): _reduce_graph_module,
    ("torch.fx.graph_module", "reduce_package_graph_module"): _reduce_graph_module,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("torch", "Tensor"): torch.Tensor,  # only ever passed as a type marker to _rebuild_from_type
    ("builtins", "object"): object,  # copyreg._reconstructor's base argument
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str) -> None:
        super().__init__(io.BytesIO(data))
        self._archive = archive
        self._prefix = prefix
        self._storages: dict[str, _Storage] = {}
        stored = sum(info.file_size for info in archive.infolist() if info.filename.startswith(f"{prefix}/data/"))
        self._budget = _Budget(2 * stored + 2**20)

    def find_class(self, module: str, name: str) -> Any:
        module = _PY2_MODULES.get(module, module)  # protocol 2 (torch.save's) spells builtins the Python 2 way
        key = (module, name)
        if key in _FUNCTIONS:
            return _FUNCTIONS[key]
        if key in _CONTAINERS:
            return _CONTAINERS[key]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        if module == "torch" and name in _DTYPE_NAMES:
            return getattr(torch, name)
        qualified = f"{module}.{name}"
        if any(qualified.startswith(prefix) or module == prefix.rstrip(".") for prefix in KNOWN_MODULE_PREFIXES):
            return _stub_class(qualified)
        raise UnsafePickle(
            f"refusing to load {qualified}: the checkpoint names something other than tensors, containers and "
            f"known module classes ({', '.join(p.rstrip('.') for p in KNOWN_MODULE_PREFIXES)}), and unpickling it "
            "could run code"
        )

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage"):
            raise UnsafePickle(f"unexpected persistent id {pid!r:.60}")
        dtype, key = pid[1], str(pid[2])
        if not isinstance(dtype, torch.dtype):
            raise UnsafePickle("a storage names no known element type")
        if key not in self._storages:  # read once, however many tensors refer to it
            try:
                raw = self._archive.read(f"{self._prefix}/data/{key}")
            except KeyError as exc:
                raise UnsafePickle(f"storage {key} is missing from the archive") from exc
            self._storages[key] = _Storage(dtype, raw, self._budget)
        if self._storages[key].dtype != dtype:
            raise UnsafePickle(f"storage {key} is read with two element types")
        return self._storages[key]


def load_module_tree(path: Path) -> Any:
    """The unpickled object of a ``torch.save`` zip file, modules as :class:`StubModule` (never runs code)."""
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise UnsafePickle(f"{path.name} is not a torch.save zip archive (legacy or foreign format)") from exc
    with archive:
        if any(info.compress_type != zipfile.ZIP_STORED for info in archive.infolist()):
            raise UnsafePickle(f"{path.name} holds compressed entries; torch.save never writes them")
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise UnsafePickle(f"{path.name} holds {len(pickles)} data.pkl records, expected 1")
        prefix = pickles[0].rsplit("/", 1)[0]
        byteorder = archive.read(f"{prefix}/byteorder").decode() if f"{prefix}/byteorder" in archive.namelist() \
            else "little"
        if byteorder != "little" or np.little_endian is False:
            raise UnsafePickle(f"{path.name} was saved big-endian; only little-endian checkpoints are read")
        try:
            return _Unpickler(archive.read(pickles[0]), archive, prefix).load()
        except UnsafePickle:
            raise
        except (pickle.UnpicklingError, EOFError, TypeError, ValueError, AttributeError, RuntimeError, KeyError,
                IndexError, OverflowError, RecursionError, zipfile.BadZipFile, OSError) as exc:
            raise UnsafePickle(f"{path.name} cannot be unpickled safely: {exc}") from exc
