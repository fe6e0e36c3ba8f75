"""The model registry: shapes, normalisation, Grad-CAM layers, pretrained weights from a local file, offline error.

Fast on a CPU: the architectures are exercised through ``tiny_model`` (the same code paths at 32-64 px, the ViT
with two blocks); the full-size registry entries are only built to check their single-channel stems.
"""

import subprocess
import sys

import huggingface_hub
import pytest
import timm
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from safetensors.torch import save_file

from mri_synth.training import models
from mri_synth.training.models import PretrainedWeightsError, create_model, get_spec, tiny_model

ARCHS = ["cnn", "resnet18", "vit", "vit_tiny"]


def _images(n: int = 3, size: int = 128) -> torch.Tensor:
    return torch.randint(0, 256, (n, 1, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))


def test_models_know_the_class_count_without_the_data_loader():
    # data.types is a leaf: the registry reads the class count there without loading the decode cache or sources
    code = ("import sys, mri_synth.training.models, mri_synth.data.types as c; "
            "print('mri_synth.data.cache' in sys.modules, c.NUM_CLASSES, c.IMAGE_SIZE, len(c.CLASS_NAMES))")
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["False", "4", "128", "4"]
    from mri_synth.data import types as constants
    assert constants.NUM_CLASSES == len(constants.CLASS_NAMES) == 4
    assert create_model("cnn", pretrained=False)(torch.zeros(1, 1, 128, 128)).shape == (1, constants.NUM_CLASSES)


def test_registry_names_and_unknown_name():
    assert models.available_models() == ARCHS
    with pytest.raises(ValueError, match="timm.list_models"):
        get_spec("no_such_model_xyz")


@pytest.mark.parametrize("name", ARCHS)
def test_forward_shape_no_nans(name):
    model, spec = tiny_model(name)
    out = model(spec.prepare(_images()))
    assert out.shape == (3, 4)
    assert torch.isfinite(out).all()


def test_vit_tiny_is_its_own_model_trainable_from_scratch_at_128_px():
    spec = get_spec("vit_tiny").with_input_size(128)
    model = create_model("vit_tiny", pretrained=False, spec=spec)
    params = sum(p.numel() for p in model.parameters())
    assert 5.0e6 < params < 6.0e6 and params < sum(p.numel() for p in create_model(
        "vit", pretrained=False, spec=get_spec("vit").with_input_size(128)).parameters()) / 10
    assert model.patch_embed.num_patches == 64 and model.patch_embed.proj.in_channels == 1
    out = model(spec.prepare(_images(2)))
    assert out.shape == (2, 4) and torch.isfinite(out).all()
    assert get_spec("vit_tiny").name != get_spec("vit").name  # trial keys and tables say which ViT ran


def test_full_size_cnn_is_the_thesis_architecture():
    model = create_model("cnn")  # from scratch: no pretrained weights by default
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [c.kernel_size for c in convs] == [(3, 3), (3, 3)] and convs[0].in_channels == 1
    assert len(linears) == 3 and linears[-1].out_features == 4  # two hidden layers and the output
    assert model(get_spec("cnn").prepare(_images(2))).shape == (2, 4)


@pytest.mark.parametrize("name,stem,size", [("resnet18", "conv1", 224), ("vit", "patch_embed.proj", 224)])
def test_full_size_timm_entries_take_one_channel(name, stem, size):
    model = create_model(name, pretrained=False)
    assert model.get_submodule(stem).in_channels == 1
    assert get_spec(name).input_size == size


def test_prepare_resizes_and_normalises_on_the_device():
    spec = get_spec("resnet18")
    white = torch.full((2, 1, 128, 128), 255, dtype=torch.uint8)
    x = spec.prepare(white)
    assert x.shape == (2, 1, 224, 224) and x.dtype == torch.float32 and x.device == white.device
    torch.testing.assert_close(x, torch.full_like(x, (1 - spec.mean) / spec.std))
    black = get_spec("cnn").prepare(torch.zeros_like(white))
    torch.testing.assert_close(black, torch.full_like(black, -0.278 / 0.327))
    with pytest.raises(ValueError, match="uint8"):
        spec.prepare(white.float())


@pytest.mark.parametrize("name", ARCHS)
def test_gradcam_layer_and_reshape_give_a_cam(name):
    model, spec = tiny_model(name)
    x = spec.prepare(_images(2))
    with GradCAM(model=model, target_layers=spec.gradcam_target_layers(model),
                 reshape_transform=spec.reshape_transform) as cam:
        maps = [cam(input_tensor=x, targets=[ClassifierOutputTarget(c)] * 2) for c in range(4)]
    assert all(m.shape == (2, spec.input_size, spec.input_size) for m in maps)
    assert all(m.min() >= 0 and m.max() <= 1 for m in maps)
    # Random weights can make one class's map all zero (ReLU of a negative sum); not every class's.
    assert max(m.std() for m in maps) > 0


def test_vit_reshape_transform_drops_prefix_tokens():
    tokens = torch.arange(2 * 17 * 3, dtype=torch.float32).view(2, 17, 3)  # class token + 4x4 patches
    grid = models.vit_reshape_transform(tokens)
    assert grid.shape == (2, 3, 4, 4)
    torch.testing.assert_close(grid[:, :, 0, 0], tokens[:, 1, :])


def test_any_timm_model_name_works():
    spec = get_spec("resnet10t")
    assert spec.timm_name == "resnet10t" and spec.reshape_transform is None
    model = create_model("resnet10t", pretrained=False)
    assert model(spec.with_input_size(64).prepare(_images(2))).shape == (2, 4)
    assert get_spec("deit_tiny_patch16_224").reshape_transform is models.vit_reshape_transform


def _timm_checkpoint(timm_name: str, **kwargs) -> dict[str, torch.Tensor]:
    """A stand-in for published ImageNet weights: a randomly initialised 3-channel, 1000-class model."""
    torch.manual_seed(123)
    return timm.create_model(timm_name, pretrained=False, **kwargs).state_dict()


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_pretrained_resnet18_from_a_local_file(tmp_path, suffix):
    state = _timm_checkpoint("resnet18")
    path = tmp_path / f"resnet18{suffix}"
    save_file(state, path) if suffix == ".safetensors" else torch.save(state, path)
    model = create_model("resnet18", weights_path=path)
    # timm's in_chans=1 adaptation sums the RGB filters of the first conv; the rest is copied as is.
    torch.testing.assert_close(model.conv1.weight, state["conv1.weight"].sum(dim=1, keepdim=True))
    torch.testing.assert_close(model.layer3[1].conv2.weight, state["layer3.1.conv2.weight"])
    assert model.fc.out_features == 4  # a fresh 4-class head instead of ImageNet's 1000


def test_pretrained_vit_from_a_local_file(tmp_path):
    _, spec = tiny_model("vit")
    kwargs = dict(spec.model_kwargs)
    state = _timm_checkpoint(spec.timm_name, **kwargs)
    path = tmp_path / "vit.pth"
    torch.save(state, path)
    model = create_model("vit", weights_path=path, spec=spec)
    torch.testing.assert_close(model.patch_embed.proj.weight, state["patch_embed.proj.weight"].sum(1, keepdim=True))
    torch.testing.assert_close(model.blocks[1].attn.qkv.weight, state["blocks.1.attn.qkv.weight"])
    assert model(spec.prepare(_images(2))).shape == (2, 4)


def test_pretrained_weights_found_in_the_project_weights_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("MRI_SYNTH_CACHE", str(tmp_path))
    state = _timm_checkpoint("resnet18")
    (tmp_path / "weights").mkdir()
    save_file(state, tmp_path / "weights" / "resnet18.safetensors")
    model = create_model("resnet18")  # pretrained by default: found without naming the file
    torch.testing.assert_close(model.layer1[0].conv1.weight, state["layer1.0.conv1.weight"])


def test_cnn_weights_round_trip(tmp_path):
    trained = create_model("cnn")
    torch.save(trained.state_dict(), tmp_path / "cnn.pth")
    loaded = create_model("cnn", weights_path=tmp_path / "cnn.pth")
    for a, b in zip(trained.parameters(), loaded.parameters()):
        torch.testing.assert_close(a, b)


def test_offline_without_weights_says_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("MRI_SYNTH_CACHE", str(tmp_path / "cache"))
    # An empty hub cache and no network: what a user sees on an offline machine (without 46 s of retries).
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(PretrainedWeightsError) as error:
        create_model("resnet18")
    message = str(error.value)
    assert "pretrained=False" in message and "weights_path" in message
    assert str(tmp_path / "cache" / "weights" / "resnet18.safetensors") in message
    assert "timm/resnet18.a1_in1k" in message


def test_bad_weight_arguments_are_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        create_model("resnet18", weights_path=tmp_path / "missing.pth")
    (tmp_path / "w.pth").write_bytes(b"")
    with pytest.raises(ValueError, match="drop one"):
        create_model("resnet18", pretrained=False, weights_path=tmp_path / "w.pth")
    with pytest.raises(PretrainedWeightsError, match="pretrained=False"):
        create_model("cnn", pretrained=True)
