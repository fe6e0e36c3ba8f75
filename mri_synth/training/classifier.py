"""The reference classifier: one model trained on the real training split, cached, for every check that needs one.

Notebook 02 (how a real-trained classifier labels synthetic slices) and notebook 03 (Grad-CAM of real vs synthetic
slices) both ask for "a classifier trained on the real training split". :func:`real_classifier` trains it once per
(data, recipe) through ``train.fit`` and keeps its weights under ``cache_dir()/classifier``; later calls load them.
The cache holds plain tensors and JSON only (read with ``weights_only=True``: a file there cannot run code), and a
file that cannot be read is trained again with a warning naming it. The checks themselves take the trained model;
training is ``train``'s, the architectures are ``models``'.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from mri_synth import paths
from mri_synth.data.types import MRIData
from mri_synth.training.fit import fit
from mri_synth.training.models import ModelSpec, create_model, get_spec
from mri_synth.training.settings import TrainConfig, TrainSettings


@dataclass(frozen=True)
class ClassifierRecipe(TrainSettings):
    """How the reference classifier is trained: the training settings (``TrainSettings``'), the model, its seed.
    All of it but the device enters the cache key."""

    model_name: str = "cnn"  # a model registry name
    pretrained: bool = False  # ImageNet weights (resnet18/vit; must be cached when offline)
    seed: int = 0
    device: str = "auto"  # where it trains; the returned model is on the CPU

    @property
    def spec(self) -> ModelSpec:
        spec = get_spec(self.model_name)
        return spec.with_input_size(self.input_size) if self.input_size else spec


def _cache_folder(recipe: ClassifierRecipe, data: MRIData) -> Path:
    content = {k: v for k, v in asdict(recipe).items() if k != "device"}
    key = hashlib.sha256(json.dumps({"data": data.fingerprint, **content}, sort_keys=True).encode()).hexdigest()[:16]
    return paths.cache_dir() / "classifier" / f"{recipe.model_name}-{key}"


def _load(folder: Path, model: nn.Module) -> pd.DataFrame | None:
    if not (folder / "history.json").exists():
        return None
    try:
        model.load_state_dict(torch.load(folder / "weights.pt", map_location="cpu", weights_only=True))
        return pd.DataFrame(json.loads((folder / "history.json").read_text()))
    except Exception as error:  # a truncated or foreign file: train again rather than leave the user stuck
        warnings.warn(f"the cached classifier in {folder} cannot be read ({type(error).__name__}: {error}); "
                      "training it again", stacklevel=3)
        return None


def real_classifier(data: MRIData, recipe: ClassifierRecipe = ClassifierRecipe(), *, progress: bool = False
                    ) -> tuple[nn.Module, ModelSpec, pd.DataFrame]:
    """The classifier trained on every real training slice of ``data``, loaded from the cache when trained before.

    Returns:
        ``(model on the CPU in eval mode, its spec, its per-epoch history)``.
    """
    spec = recipe.spec
    folder = _cache_folder(recipe, data)
    model = create_model(recipe.model_name, pretrained=False, spec=spec)
    history = _load(folder, model)
    if history is not None:
        return model.eval(), spec, history
    config = TrainConfig(**asdict(recipe.training), seed=recipe.seed, device=recipe.device, progress=progress)
    result = fit(recipe.model_name, data.train.images, data.train.labels, data.test.images, data.test.labels,
                 config, spec=spec, pretrained=recipe.pretrained)
    # plain float32 contiguous weights: the CAM hooks and the cache do not depend on how training ran
    model.load_state_dict({k: v.float().contiguous() for k, v in result.model.state_dict().items()})
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), tmp / "weights.pt")
    (tmp / "history.json").write_text(json.dumps(result.history.to_dict(orient="list")))
    if folder.exists():
        for stale in folder.iterdir():
            stale.unlink()
        folder.rmdir()
    os.replace(tmp, folder)
    return model.eval(), spec, result.history
