"""Networks, model folders and syndrome ranking.

Pure torch / numpy: nothing here imports the web layer or the database, so the CLI, the workers and the
web app share it. Modules: ``iresnet`` (the arcface_torch iResNet family with a classifier head),
``preprocess`` (RGB uint8 → [-1, 1] tensors), ``checkpoint`` (arcface_torch key names, split or merged
head), ``card`` (model.json / labels.json), ``gallery`` (gallery.npz), ``registry`` (checked, cached
loading of model folders), ``predict`` (GestaltMatcher-Arc style ranking), ``data`` / ``augment`` /
``metrics`` / ``train`` (the demo-model trainer) and ``command`` (its CLI entry point).
"""

from app.nets.errors import ModelFolderError
from app.nets.iresnet import (
    ARCHITECTURES,
    EMBEDDING_DIM,
    INPUT_SIZE,
    IResNet,
    build_network,
    iresnet18,
    iresnet34,
    iresnet50,
    iresnet100,
)
from app.nets.predict import Prediction, PredictionResult, embed, predict
from app.nets.preprocess import preprocess
from app.nets.registry import DEFAULT_MODEL_ID, LoadedModel, clear_cache, list_models, load_model, read_model_folder

__all__ = [
    "ARCHITECTURES",
    "DEFAULT_MODEL_ID",
    "EMBEDDING_DIM",
    "INPUT_SIZE",
    "IResNet",
    "LoadedModel",
    "ModelFolderError",
    "Prediction",
    "PredictionResult",
    "build_network",
    "clear_cache",
    "embed",
    "iresnet18",
    "iresnet34",
    "iresnet50",
    "iresnet100",
    "list_models",
    "load_model",
    "predict",
    "preprocess",
    "read_model_folder",
]
