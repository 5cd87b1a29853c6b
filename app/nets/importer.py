"""Importing the checkpoints labs actually have into arcface_torch-keyed iResNet weights.

GestaltMatcher-Arc loads two kinds of files: ONNX iResNets (converted with onnx2torch at load time) and
whole pickled modules saved by its training code (``torch.save(model)`` of a ``MyArcFace`` whose
``base`` is such a converted graph). Neither has arcface_torch key names, and exporters rename and
fuse layers: torch's ONNX exporter folds every BatchNorm that follows a convolution into the
convolution's weights and bias, dedupes equal tensors behind ``Identity`` nodes, and names the rest
``onnx::Conv_123``. Names therefore cannot be trusted, but *order and shapes* can: both formats list
their layers in execution order (ONNX nodes are topologically sorted; traced and converted graph
modules register their submodules as they are called), and that order is the order in which our
iResNet calls its layers.

So the importer walks both sequences together — convolution, BatchNorm, PReLU, Linear — checking
every shape. A convolution that carries a bias in the source while ours has none is a fused
conv+BatchNorm: its weight goes to our convolution and its bias into the following BatchNorm, set to
the identity otherwise (weight 1, mean 0, variance 1 − ε), which computes exactly the same function.
BatchNorm epsilons other than ours are folded into the variance. The 512-d embedding layers and an
optional classifier ``Linear(512, C)`` follow. Anything that does not line up is refused with the
position and the shapes. The result is then *verified* against the source: ONNX Runtime's outputs
for ONNX files; for pickles, every source tensor must have been used exactly once (the function of
a pickled module cannot be run without running its code, which is the point of not unpickling it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from app.nets.errors import ModelFolderError
from app.nets.iresnet import BN_EPS, EMBEDDING_DIM, INPUT_SIZE, IResNet
from app.nets.safe_pickle import StubModule, load_module_tree

#: The largest tensor an ONNX file may declare (iResNet-100's largest is 12.8 M; a 10,000-class head 5 M).
MAX_ONNX_ELEMENTS = 2**27

__all__ = ["ImportResult", "SourceLayer", "map_layers", "onnx_layers", "pickle_layers", "verify_against_onnx"]


@dataclass
class SourceLayer:
    """One parametric layer of the source, in execution order."""

    kind: str  # "conv", "bn", "prelu", "linear"
    tensors: dict[str, np.ndarray]
    where: str  # the source's own name, for messages
    eps: float = BN_EPS


@dataclass
class ImportResult:
    state_dict: dict[str, torch.Tensor]
    has_head: bool
    num_classes: int | None
    source_tensors: int
    used_tensors: int


# --- reading ONNX -------------------------------------------------------------------------------------

def onnx_layers(path: Path) -> list[SourceLayer]:
    """Conv / BatchNormalization / PRelu / Gemm (or MatMul + Add) nodes of an ONNX file, in graph order."""
    import onnx
    from onnx import numpy_helper

    name = Path(path).name
    try:  # never follow external-data paths: the file names them, and "../../x" reads outside its folder
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError, a truncated file …: the file, not the app, is at fault
        raise ModelFolderError(f"{name} is not a readable ONNX model ({type(exc).__name__}: {exc})") from exc
    external = [t.name for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    external += [n.name or n.op_type for n in model.graph.node for a in n.attribute
                 if a.name == "value" and a.t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        raise ModelFolderError(f"{name} keeps tensors in external files ({', '.join(external[:3])}); import a "
                               "self-contained ONNX file (external data paths are never followed)")

    def array(tensor: Any) -> np.ndarray:
        declared = math.prod(int(d) for d in tensor.dims) if all(d >= 0 for d in tensor.dims) else -1
        if declared < 0 or declared > MAX_ONNX_ELEMENTS:
            raise ModelFolderError(f"{name}: tensor {tensor.name or '?'} declares shape {list(tensor.dims)}")
        try:
            return numpy_helper.to_array(tensor)
        except Exception as exc:  # data shorter than its shape, unknown type …
            raise ModelFolderError(f"{name}: tensor {tensor.name or '?'} is malformed ({exc})") from exc

    values: dict[str, np.ndarray] = {t.name: array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = array(attr.t)
        elif node.op_type == "Identity" and node.input and node.input[0] in values:
            values[node.output[0]] = values[node.input[0]]

    def const(name: str, node: Any) -> np.ndarray:
        if name not in values:
            raise ModelFolderError(f"ONNX node {node.name or node.op_type} takes {name!r}, which is not a constant")
        return np.asarray(values[name], dtype=np.float32)

    layers: list[SourceLayer] = []
    pending_matmul: SourceLayer | None = None
    for node in model.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        name = node.name or node.output[0]
        if node.op_type == "Conv":
            tensors = {"weight": const(node.input[1], node)}
            if len(node.input) > 2 and node.input[2]:
                tensors["bias"] = const(node.input[2], node)
            layers.append(SourceLayer("conv", tensors, name))
        elif node.op_type == "BatchNormalization":
            scale, bias, mean, var = (const(n, node) for n in node.input[1:5])
            layers.append(SourceLayer("bn", {"weight": scale, "bias": bias, "running_mean": mean, "running_var": var},
                                      name, eps=float(attrs.get("epsilon", 1e-5))))
        elif node.op_type == "PRelu":
            layers.append(SourceLayer("prelu", {"weight": const(node.input[1], node).reshape(-1)}, name))
        elif node.op_type == "Gemm":
            weight = const(node.input[1], node)
            if attrs.get("transA", 0):
                raise ModelFolderError(f"ONNX Gemm {name} transposes its input; not an iResNet layer")
            if not attrs.get("transB", 0):
                weight = weight.T
            weight = weight * float(attrs.get("alpha", 1.0))
            tensors = {"weight": np.ascontiguousarray(weight)}
            if len(node.input) > 2 and node.input[2]:
                tensors["bias"] = const(node.input[2], node).reshape(-1) * float(attrs.get("beta", 1.0))
            layers.append(SourceLayer("linear", tensors, name))
        elif node.op_type == "MatMul" and node.input[1] in values:
            pending_matmul = SourceLayer("linear", {"weight": np.ascontiguousarray(const(node.input[1], node).T)}, name)
            layers.append(pending_matmul)
        elif node.op_type == "Add" and pending_matmul is not None and node.input[1] in values \
                and "bias" not in pending_matmul.tensors:
            pending_matmul.tensors["bias"] = const(node.input[1], node).reshape(-1)
            pending_matmul = None
    return layers


# --- reading whole pickled modules ---------------------------------------------------------------------

def _as_array(value: Any) -> np.ndarray | None:
    return value.detach().float().numpy() if isinstance(value, torch.Tensor) else None


def _walk(stub: Any, prefix: str, out: list[SourceLayer], seen: set[int]) -> None:
    if not isinstance(stub, StubModule) or id(stub) in seen:
        return
    seen.add(id(stub))
    state = stub.__dict__
    params = {k: v for k, v in (state.get("_parameters") or {}).items() if isinstance(v, torch.Tensor)}
    buffers = {k: v for k, v in (state.get("_buffers") or {}).items() if isinstance(v, torch.Tensor)}
    weight = params.get("weight")
    if weight is not None:
        tensors = {k: _as_array(v) for k, v in {**params, **buffers}.items() if k != "num_batches_tracked"}
        if "running_mean" in buffers:
            eps = state.get("eps", 1e-5)
            eps = float(eps) if isinstance(eps, float) else 1e-5
            out.append(SourceLayer("bn", tensors, prefix or "(root)", eps=eps))
        elif weight.dim() == 4:
            out.append(SourceLayer("conv", tensors, prefix))
        elif weight.dim() == 2:
            out.append(SourceLayer("linear", tensors, prefix))
        elif weight.dim() == 1:
            out.append(SourceLayer("prelu", {"weight": tensors["weight"].reshape(-1)}, prefix))
    for name, child in (state.get("_modules") or {}).items():
        _walk(child, f"{prefix}.{name}" if prefix else str(name), out, seen)


def pickle_layers(path: Path) -> list[SourceLayer]:
    """The parametric layers of a whole pickled module, in registration (= execution) order, safely."""
    root = load_module_tree(path)
    if isinstance(root, dict) and not isinstance(root, StubModule):
        root = next((v for v in root.values() if isinstance(v, StubModule)), root)
    if not isinstance(root, StubModule):
        raise ModelFolderError(f"{Path(path).name} holds no pickled module (a state dict loads directly instead)")
    layers: list[SourceLayer] = []
    _walk(root, "", layers, set())
    return layers


# --- matching onto our iResNet -------------------------------------------------------------------------

def _target_layers(network: IResNet) -> list[tuple[str, nn.Module]]:
    """Our layers in the order the forward pass calls them."""
    names = {module: name for name, module in network.named_modules()}
    order: list[tuple[str, nn.Module]] = []
    kinds = (nn.Conv2d, nn.BatchNorm2d, nn.BatchNorm1d, nn.PReLU, nn.Linear)
    handles = [m.register_forward_hook(lambda mod, _i, _o: order.append((names[mod], mod)))
               for m in network.modules() if isinstance(m, kinds)]
    try:
        with torch.no_grad():
            network.eval()(torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE))
    finally:
        for handle in handles:
            handle.remove()
    return order


def _put(state: dict[str, torch.Tensor], name: str, key: str, value: np.ndarray, expected: torch.Tensor) -> None:
    if tuple(value.shape) != tuple(expected.shape):
        raise ModelFolderError(f"{name}.{key}: the source has shape {tuple(value.shape)}, the network "
                               f"expects {tuple(expected.shape)}; is --arch/--width right?")
    state[f"{name}.{key}"] = torch.from_numpy(np.array(value, dtype=np.float32, copy=True))


def _identity_bn(state: dict[str, torch.Tensor], name: str, module: nn.Module, bias: np.ndarray) -> None:
    channels = module.num_features
    _put(state, name, "weight", np.ones(channels, np.float32), module.weight)
    _put(state, name, "bias", bias, module.bias)
    _put(state, name, "running_mean", np.zeros(channels, np.float32), module.running_mean)
    _put(state, name, "running_var", np.full(channels, 1.0 - module.eps, np.float32), module.running_var)


def map_layers(layers: list[SourceLayer], network: IResNet) -> ImportResult:
    """Our state dict (arcface_torch keys) from the source's layers; raises ModelFolderError on a mismatch."""
    targets = _target_layers(network)
    state: dict[str, torch.Tensor] = {}
    i = j = 0
    used = 0

    def source(kind: str, name: str) -> SourceLayer:
        nonlocal i
        if i >= len(layers):
            raise ModelFolderError(f"the source ends before our {name} ({kind}); is --arch right?")
        layer = layers[i]
        if layer.kind != kind:
            raise ModelFolderError(f"source layer {i} ({layer.where}) is a {layer.kind}, our {name} is a {kind}")
        i += 1
        return layer

    while j < len(targets):
        name, module = targets[j]
        if name == "head":
            break
        if isinstance(module, nn.Conv2d):
            layer = source("conv", name)
            _put(state, name, "weight", layer.tensors["weight"], module.weight)
            used += len(layer.tensors)
            if "bias" in layer.tensors:  # fused conv + BatchNorm
                bn_name, bn = targets[j + 1]
                if not isinstance(bn, nn.BatchNorm2d):
                    raise ModelFolderError(f"source conv {layer.where} has a bias but our {name} is not followed "
                                           "by a BatchNorm")
                _identity_bn(state, bn_name, bn, layer.tensors["bias"])
                j += 1
        elif isinstance(module, nn.BatchNorm2d | nn.BatchNorm1d):
            layer = source("bn", name)
            t = layer.tensors
            _put(state, name, "weight", t["weight"], module.weight)
            _put(state, name, "bias", t["bias"], module.bias)
            _put(state, name, "running_mean", t["running_mean"], module.running_mean)
            _put(state, name, "running_var", t["running_var"] + (layer.eps - module.eps), module.running_var)
            used += len(t)
        elif isinstance(module, nn.PReLU):
            layer = source("prelu", name)
            slope = layer.tensors["weight"]
            if slope.size == 1 and module.num_parameters > 1:
                slope = np.full(module.num_parameters, float(slope[0]), np.float32)
            _put(state, name, "weight", slope, module.weight)
            used += 1
        elif isinstance(module, nn.Linear):  # fc: the 512-d embedding
            layer = source("linear", name)
            _put(state, name, "weight", layer.tensors["weight"], module.weight)
            _put(state, name, "bias", layer.tensors.get("bias", np.zeros(module.out_features, np.float32)), module.bias)
            used += len(layer.tensors)
            feat_name, feat = targets[j + 1]
            if i < len(layers) and layers[i].kind == "bn":
                pass  # the features BatchNorm follows as its own layer
            else:  # the exporter folded it into fc
                _identity_bn(state, feat_name, feat, np.zeros(feat.num_features, np.float32))
                j += 1
        j += 1

    head = network.head
    has_head = i < len(layers) and layers[i].kind == "linear" and layers[i].tensors["weight"].shape[1] == EMBEDDING_DIM
    num_classes = None
    if has_head:
        layer = layers[i]
        num_classes = int(layer.tensors["weight"].shape[0])
        state["head.weight"] = torch.from_numpy(np.array(layer.tensors["weight"], dtype=np.float32, copy=True))
        state["head.bias"] = torch.from_numpy(np.array(
            layer.tensors.get("bias", np.zeros(num_classes, np.float32)), dtype=np.float32, copy=True))
        used += len(layer.tensors)
        i += 1
    else:
        state["head.weight"] = torch.zeros_like(head.weight)
        state["head.bias"] = torch.zeros_like(head.bias)
    if i != len(layers):
        extra = layers[i]
        raise ModelFolderError(f"the source has {len(layers) - i} layer(s) after the embedding we cannot place, "
                               f"starting with {extra.where} ({extra.kind}); is --arch right?")
    return ImportResult(state_dict=state, has_head=has_head, num_classes=num_classes,
                        source_tensors=sum(len(layer.tensors) for layer in layers), used_tensors=used)


# --- verification --------------------------------------------------------------------------------------

def verification_batch(count: int = 4, seed: int = 0) -> np.ndarray:
    """Deterministic inputs in the network's range: smooth random images normalised to [-1, 1]."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(-1, 1, size=(count, 3, 14, 14)).astype(np.float32)
    smooth = torch.nn.functional.interpolate(torch.from_numpy(coarse), size=(INPUT_SIZE, INPUT_SIZE),
                                             mode="bilinear", align_corners=False)
    noise = rng.normal(0, 0.1, size=smooth.shape).astype(np.float32)
    return np.clip(smooth.numpy() + noise, -1, 1).astype(np.float32)


def verify_against_onnx(network: IResNet, path: Path, batch: np.ndarray) -> tuple[float, float]:
    """(largest |difference|, that relative to the largest |component|) between our embeddings and ONNX
    Runtime's (the source's 512-d output). Relative, because float32 rounding scales with the values: an
    untrained network's embeddings reach thousands, a trained one's tens."""
    import onnxruntime

    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        input_name = session.get_inputs()[0].name
        embedding_outputs = [o.name for o in session.get_outputs() if o.shape and o.shape[-1] == EMBEDDING_DIM]
        if not embedding_outputs:
            raise ModelFolderError(f"{Path(path).name} has no {EMBEDDING_DIM}-d output to compare embeddings with")
        theirs = np.concatenate([session.run([embedding_outputs[-1]], {input_name: batch[k:k + 1]})[0]
                                 for k in range(batch.shape[0])])
    except ModelFolderError:
        raise
    except Exception as exc:  # ONNX Runtime refuses the graph: say so, never a traceback
        raise ModelFolderError(f"ONNX Runtime cannot run {Path(path).name} ({type(exc).__name__}: {exc})") from exc
    with torch.no_grad():
        ours = network.eval().embed(torch.from_numpy(batch)).numpy()
    diff = float(np.abs(ours - theirs).max())
    return diff, diff / max(float(np.abs(theirs).max()), 1e-12)
