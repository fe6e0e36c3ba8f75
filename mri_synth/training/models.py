"""The model registry: an architecture is a name; the registry knows how to build it and how to feed it.

``get_spec(name)`` says what a model needs (input size, single-channel normalisation, the layer Grad-CAM reads
and, for Vision Transformers, the token-to-map reshape); ``create_model(name)`` builds it:

- ``cnn``: the thesis's basic CNN (two 3x3 conv layers, each with 2x2 max-pool and ReLU, then a fully connected
  network with two hidden layers and a 4-way output), trained from scratch at 128x128.
- ``resnet18``: timm's ResNet-18, ImageNet-pretrained, fine-tuned end to end at 224x224.
- ``vit``: timm's ViT-B/16 (``vit_base_patch16_224``), pretrained, fine-tuned end to end at 224x224.
- ``vit_tiny``: timm's ViT-Tiny/16 (``vit_tiny_patch16_224``, 5.5M parameters), the small ViT a CPU can train from
  scratch (``pretrained=False``, e.g. at 128x128: 64 patches). Its own name, so a table never calls it ``vit``.
- any other timm model name, with the input size and normalisation of its pretrained config.

Every model takes ONE input channel: timm adapts pretrained first-layer weights for ``in_chans=1`` (it sums them
over RGB), so no 3x copy of the image travels through the pipeline. Pretrained weights come from, in order:
``weights_path`` if given, ``<cache_dir>/weights/<model>.{safetensors,pth,bin}`` if present, timm's own hub cache
(downloading when online). Offline with none of these, a ``PretrainedWeightsError`` says where to put the file.

Left to others: the training loop (``train``), augmentation (``augment``), Grad-CAM itself (``gradcam``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import timm
import torch
import torch.nn.functional as F
from torch import nn

from mri_synth import paths
from mri_synth.data.types import NUM_CLASSES

# timm modules whose models are plain ViT token sequences (prefix tokens + a square grid of patches).
_VIT_MODULES = ("vision_transformer", "deit", "beit", "eva", "vision_transformer_relpos")
_WEIGHT_SUFFIXES = (".safetensors", ".pth", ".bin")


class PretrainedWeightsError(RuntimeError):
    """Pretrained weights were asked for but none could be found or downloaded."""


def vit_reshape_transform(tokens: torch.Tensor) -> torch.Tensor:
    """ViT tokens ``[N, prefix + h*w, C]`` -> feature map ``[N, C, h, w]`` (pytorch-grad-cam's reshape hook).

    The prefix (class token, register tokens) is whatever is left over above the largest square grid.
    """
    n, length, channels = tokens.shape
    side = int(length**0.5)
    while side * side > length:  # guard against float rounding of the square root
        side -= 1
    grid = tokens[:, length - side * side :, :]
    return grid.reshape(n, side, side, channels).permute(0, 3, 1, 2)


def _resolve_submodule(model: nn.Module, path: str) -> nn.Module:
    """``"blocks.-1.norm1"`` -> ``model.blocks[-1].norm1`` (integers index into sequential containers)."""
    module: Any = model
    for part in path.split("."):
        module = module[int(part)] if part.lstrip("-").isdigit() else getattr(module, part)
    return module


@dataclass(frozen=True)
class ModelSpec:
    """What a registered architecture needs from the data pipeline and from Grad-CAM.

    Attributes:
        name: The registry name (``"cnn"``, ``"resnet18"``, ``"vit"`` or a timm model name).
        timm_name: The timm model name, or ``None`` for the basic CNN.
        input_size: Side of the square input the model is fed (images are resized to it on the device).
        mean: Single-channel normalisation mean, on the 0..1 intensity scale.
        std: Single-channel normalisation standard deviation, on the 0..1 intensity scale.
        reshape_transform: For ViTs, maps tokens to ``[N, C, h, w]`` for Grad-CAM; ``None`` for CNNs.
        gradcam_layer: Dotted path of the layer Grad-CAM reads (``None``: found from the model's feature info).
        pretrained_default: Whether ``create_model`` loads pretrained weights when not told.
        model_kwargs: Extra keyword arguments for the model constructor (e.g. ``img_size`` for a small ViT).
    """

    name: str
    timm_name: str | None
    input_size: int
    mean: float
    std: float
    reshape_transform: Callable[[torch.Tensor], torch.Tensor] | None = None
    gradcam_layer: str | None = None
    pretrained_default: bool = False
    model_kwargs: tuple[tuple[str, Any], ...] = field(default=())

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``[N, 1, H, W]`` on any device -> float32 ``[N, 1, S, S]`` resized and normalised, same device."""
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 1:
            raise ValueError(
                f"{self.name}: expected uint8 images of shape [N, 1, H, W], got {images.dtype} {tuple(images.shape)}; "
                "pass the Split.images tensor (or a slice of it) as loaded by mri_synth.data.cache.load_data"
            )
        x = images.float()
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size,) * 2, mode="bilinear", antialias=True, align_corners=False)
        # One fused multiply-add: (x / 255 - mean) / std.
        return x.mul_(1.0 / (255.0 * self.std)).sub_(self.mean / self.std)

    def gradcam_target_layers(self, model: nn.Module) -> list[nn.Module]:
        """The layer(s) whose activations and gradients Grad-CAM reads, in a model built from this spec."""
        if self.gradcam_layer is not None:
            return [_resolve_submodule(model, self.gradcam_layer)]
        if self.reshape_transform is not None:
            return [_resolve_submodule(model, "blocks.-1.norm1")]
        info = getattr(model, "feature_info", None)
        if not info:
            raise ValueError(f"{self.name}: cannot find a Grad-CAM layer; set ModelSpec.gradcam_layer explicitly")
        return [model.get_submodule(info[-1]["module"])]

    def with_input_size(self, size: int) -> ModelSpec:
        """The same spec at another input size (small sizes keep CPU tests fast).

        For the basic CNN and for ViTs the size is also passed to the constructor, which must know it.
        """
        if size < 8:
            raise ValueError(f"input size {size} is too small; use at least 8 pixels")
        kwargs = dict(self.model_kwargs)
        if self.timm_name is None or self.reshape_transform is not None:
            kwargs["img_size"] = size
        return replace(self, input_size=size, model_kwargs=tuple(sorted(kwargs.items())))


class BasicCNN(nn.Module):
    """The thesis's basic CNN: 2 x (3x3 conv -> 2x2 max-pool -> ReLU), then FC 128 -> FC 64 -> 4 logits.

    Max-pool comes before ReLU: both are monotone, so it is the same function as conv -> ReLU -> pool, but the
    ReLU (and its backward) touches a quarter of the elements; on a CPU this network's time goes to such
    memory-bound element-wise work, not to the convolutions.
    """

    def __init__(self, num_classes: int = NUM_CLASSES, img_size: int = 128, channels: tuple[int, int] = (16, 32),
                 hidden: tuple[int, int] = (128, 64)) -> None:
        super().__init__()
        if img_size % 4:
            raise ValueError(f"BasicCNN needs an input size divisible by 4 (two 2x2 pools), got {img_size}")
        c1, c2 = channels
        self.block1 = nn.Sequential(nn.Conv2d(1, c1, 3, padding=1), nn.MaxPool2d(2), nn.ReLU(inplace=True))
        self.block2 = nn.Sequential(nn.Conv2d(c1, c2, 3, padding=1), nn.MaxPool2d(2), nn.ReLU(inplace=True))
        self.classifier = nn.Sequential(
            nn.Linear(c2 * (img_size // 4) ** 2, hidden[0]), nn.ReLU(inplace=True),
            nn.Linear(hidden[0], hidden[1]), nn.ReLU(inplace=True),
            nn.Linear(hidden[1], num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block2(self.block1(x))
        # Flatten in channels-last (N, H, W, C) order: free for channels-last activations, one copy otherwise,
        # and the same function (same weight layout) whichever memory format the model runs in.
        return self.classifier(x.permute(0, 2, 3, 1).flatten(1))


_REGISTRY: dict[str, ModelSpec] = {
    # Trained from scratch: normalised by the train split's own intensity statistics (mean 0.278, std 0.327 on
    # the 0..1 scale), which learned faster than raw 0..1 input in a 3-epoch comparison on 30% of the data.
    "cnn": ModelSpec("cnn", None, 128, mean=0.278, std=0.327, gradcam_layer="block2"),
    "resnet18": ModelSpec("resnet18", "resnet18", 224, mean=0.449, std=0.226, gradcam_layer="layer4.-1",
                          pretrained_default=True),
    "vit": ModelSpec("vit", "vit_base_patch16_224", 224, mean=0.5, std=0.5, reshape_transform=vit_reshape_transform,
                     gradcam_layer="blocks.-1.norm1", pretrained_default=True),
    "vit_tiny": ModelSpec("vit_tiny", "vit_tiny_patch16_224", 224, mean=0.5, std=0.5,
                          reshape_transform=vit_reshape_transform, gradcam_layer="blocks.-1.norm1",
                          pretrained_default=True),
}


# Small, randomly initialised versions of the registered architectures: same code paths, seconds on a CPU.
_TINY: dict[str, tuple[int, dict[str, Any]]] = {
    "cnn": (64, {}),
    "resnet18": (64, {}),
    "vit": (32, {"patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 2}),
    "vit_tiny": (32, {"patch_size": 8, "depth": 2}),
}


def tiny_model(name: str, num_classes: int = NUM_CLASSES) -> tuple[nn.Module, ModelSpec]:
    """A small, randomly initialised variant of a registered architecture and its spec (for tests, quick runs).

    ``cnn`` and ``resnet18`` at 64x64 input; ``vit`` is a 2-block ViT (patch 8, width 64) at 32x32, ``vit_tiny``
    two of its blocks (patch 8, its own width 192) at 32x32.
    """
    if name not in _TINY:
        raise ValueError(f"no tiny variant of {name!r}; choose one of {list(_TINY)}")
    size, kwargs = _TINY[name]
    spec = get_spec(name).with_input_size(size)
    spec = replace(spec, model_kwargs=tuple(sorted({**dict(spec.model_kwargs), **kwargs}.items())))
    return create_model(name, pretrained=False, num_classes=num_classes, spec=spec), spec


def available_models() -> list[str]:
    """The registry's own names; any timm model name (``timm.list_models()``) works as well."""
    return list(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    """The spec of a registered name or of any timm model name.

    Raises:
        ValueError: the name is neither registered nor a timm model.
    """
    if name in _REGISTRY:
        return _REGISTRY[name]
    arch = timm.models.get_arch_name(name)
    if not timm.is_model(arch):
        raise ValueError(
            f"unknown model {name!r}: use one of {available_models()} or a timm model name "
            "(see timm.list_models('*resnet*'))"
        )
    cfg = timm.models.get_pretrained_cfg(name)
    size = int(cfg.input_size[-1]) if cfg is not None else 224
    # Grayscale input: timm sums the RGB filters, so the mean of the channel statistics is the matching one.
    mean = sum(cfg.mean) / len(cfg.mean) if cfg is not None else 0.5
    std = sum(cfg.std) / len(cfg.std) if cfg is not None else 0.5
    is_vit = timm.models.is_model_in_modules(arch, _VIT_MODULES)
    return ModelSpec(name, name, size, mean, std, reshape_transform=vit_reshape_transform if is_vit else None,
                     pretrained_default=cfg is not None)


def _local_weights(timm_name: str) -> Path | None:
    folder = paths.cache_dir() / "weights"
    for stem in (timm_name, timm_name.split(".")[0]):
        for suffix in _WEIGHT_SUFFIXES:
            if (folder / f"{stem}{suffix}").is_file():
                return folder / f"{stem}{suffix}"
    return None


def _offline_message(spec: ModelSpec, cause: BaseException) -> str:
    cfg = timm.models.get_pretrained_cfg(spec.timm_name)
    hub_id = getattr(cfg, "hf_hub_id", None) or spec.timm_name
    folder = paths.cache_dir() / "weights"
    return (
        f"no pretrained weights for {spec.name!r} ({spec.timm_name}): timm could not load them from its hub cache or "
        f"download them ({type(cause).__name__}). Fix one of: (1) on a machine with internet, download "
        f"'{hub_id}' (e.g. `hf download {hub_id}`) and copy the Hugging Face cache (HF_HOME) here; "
        f"(2) put the ImageNet state_dict file at {folder / (spec.timm_name + '.safetensors')} (or .pth/.bin), "
        f"or pass weights_path=<file>; (3) pass pretrained=False to train from random weights. "
        f"Offline, set HF_HUB_OFFLINE=1 so this error comes without network retries."
    )


def create_model(name: str, *, pretrained: bool | None = None, weights_path: str | os.PathLike | None = None,
                 num_classes: int = NUM_CLASSES, spec: ModelSpec | None = None, **model_kwargs: Any) -> nn.Module:
    """Build a single-channel classifier by registry or timm name.

    Args:
        name: ``"cnn"``, ``"resnet18"``, ``"vit"``, ``"vit_tiny"`` or any timm model name.
        pretrained: Load pretrained weights; ``None`` means the registry's default (True for the timm entries,
            or whenever ``weights_path`` is given).
        weights_path: A local weights file (a state_dict in .safetensors/.pth/.bin) to load instead of the hub;
            for timm models, a checkpoint of the original 3-channel model (timm adapts it to one channel).
        num_classes: Output classes (the new head is randomly initialised when it differs from the checkpoint's).
        spec: The spec to build from (e.g. ``get_spec("vit").with_input_size(64)``); default ``get_spec(name)``.
        **model_kwargs: Passed to the constructor (timm's ``create_model`` or ``BasicCNN``), e.g. ``img_size``.

    Raises:
        PretrainedWeightsError: pretrained weights were asked for and none could be found (offline).
        FileNotFoundError: ``weights_path`` does not exist.
    """
    spec = spec or get_spec(name)
    kwargs = {**dict(spec.model_kwargs), **model_kwargs}
    if weights_path is not None:
        if pretrained is False:
            raise ValueError("weights_path was given with pretrained=False: drop one of the two")
        weights_path = Path(weights_path).expanduser()
        if not weights_path.is_file():
            raise FileNotFoundError(f"weights file {weights_path} does not exist; pass the path of a saved state_dict")
        pretrained = True
    pretrained = spec.pretrained_default if pretrained is None else pretrained

    if spec.timm_name is None:
        model = BasicCNN(num_classes=num_classes, **kwargs)
        if pretrained:
            if weights_path is None:
                raise PretrainedWeightsError(
                    f"{name!r} has no published pretrained weights: pass weights_path=<a saved state_dict> "
                    "or pretrained=False")
            model.load_state_dict(timm.models.load_state_dict(str(weights_path)))
        return model

    timm_kwargs: dict[str, Any] = {"in_chans": 1, "num_classes": num_classes, **kwargs}
    if not pretrained:
        return timm.create_model(spec.timm_name, pretrained=False, **timm_kwargs)
    weights_path = weights_path or _local_weights(spec.timm_name)
    if weights_path is not None:
        # timm's own mechanism: its loader adapts in_chans and drops a mismatched classifier head.
        return timm.create_model(spec.timm_name, pretrained=True, pretrained_cfg_overlay={"file": str(weights_path)},
                                 **timm_kwargs)
    try:
        return timm.create_model(spec.timm_name, pretrained=True, **timm_kwargs)
    except (OSError, RuntimeError, ValueError) as error:  # hub errors are OSError subclasses
        raise PretrainedWeightsError(_offline_message(spec, error)) from error
