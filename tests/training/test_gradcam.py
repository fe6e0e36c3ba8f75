"""Tests of mri_synth.training.gradcam: CAM shape and range per architecture, hooks released, agreement metrics,
and a CAM that finds the corner a model was trained to look at."""

import gc
import tracemalloc

import numpy as np
import pytest
import torch

from mri_synth.data.types import CLASS_NAMES
from mri_synth.training.gradcam import (
    CAM_METHODS,
    PAIR_KINDS,
    CamExplainer,
    agreement_table,
    cam_correlation,
    cam_method,
    class_activation_maps,
    overlay_cam,
    resolve_class,
    summarize_agreement,
    top_region_overlap,
)
from mri_synth.training.models import create_model, get_spec

# Small inputs keep the CPU cost down: ViT-B/16 at 32 px is a 2x2 token grid, ResNet-18 at 64 px a 2x2 map.
ARCH_SIZES = {"cnn": 32, "resnet18": 64, "vit": 32}


def small_model(name: str, seed: int = 0):
    torch.manual_seed(seed)
    spec = get_spec(name).with_input_size(ARCH_SIZES[name])
    return create_model(name, pretrained=False, spec=spec), spec


def hook_count(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


def random_slices(n: int, size: int = 48, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 1, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", list(ARCH_SIZES))
def test_cam_shape_range_and_hooks_per_architecture(name):
    model, spec = small_model(name)
    images = random_slices(3)
    with CamExplainer(model, spec) as explainer:
        assert hook_count(model) > 0
        cams = explainer.explain(images, target_class="Moderate_Demented")
    assert cams.shape == (3, 48, 48) and cams.dtype == torch.float32
    assert torch.isfinite(cams).all() and cams.min() >= 0 and cams.max() <= 1
    # The library scales each map to [0, 1]: a map is either all zero (no positive evidence) or reaches 1.
    assert all(c.max() == 0 or c.max() > 0.99 for c in cams)
    assert hook_count(model) == 0


@pytest.mark.parametrize("method", ["gradcam", "Grad-CAM++", "score_cam", "EigenCAM"])
def test_methods_selectable_by_name(method):
    model, spec = small_model("cnn")
    cams = class_activation_maps(model, spec, random_slices(2, 32), target_class=[0, 3], method=method,
                                 batch_size=8)
    assert cams.shape == (2, 32, 32) and cams.min() >= 0 and cams.max() <= 1
    assert hook_count(model) == 0


def test_method_and_class_names_resolve_or_fail_clearly():
    assert cam_method("Grad-CAM++") is CAM_METHODS["gradcam++"]
    assert cam_method("Score_CAM") is CAM_METHODS["scorecam"]
    with pytest.raises(ValueError, match="unknown CAM method 'lime'.*gradcam"):
        cam_method("lime")
    assert resolve_class("ModerateDemented") == 1 and resolve_class(2) == 2
    with pytest.raises(ValueError, match="0..3"):
        resolve_class(7)
    model, spec = small_model("cnn")
    with pytest.raises(ValueError, match="2 target classes for 3 images"):
        class_activation_maps(model, spec, random_slices(3, 32), target_class=[0, 1])
    assert hook_count(model) == 0  # released although explain raised


def test_hooks_released_across_a_loop_and_memory_does_not_grow():
    model, spec = small_model("cnn")
    model.train()
    images = random_slices(4, 32)

    def one_round():
        with CamExplainer(model, spec, method="gradcam") as explainer:
            explainer.explain(images, target_class=1)

    for _ in range(3):  # warm-up: allocator caches, lazy imports
        one_round()
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for _ in range(40):
        one_round()
        assert hook_count(model) == 0
    gc.collect()
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    # One round holds ~40 kB of activations and gradients; 40 leaked rounds would be > 1 MB.
    assert grown < 200_000, f"memory grew by {grown} bytes over 40 rounds"
    assert model.training, "the explainer must hand the model back in the mode it found it"
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(RuntimeError, match="outside its `with` block"):
        CamExplainer(model, spec).explain(images, 0)
    with pytest.raises(KeyError):
        with CamExplainer(model, spec):
            raise KeyError("boom")
    explainer = CamExplainer(model, spec)
    with explainer, pytest.raises(RuntimeError, match="already open"):
        explainer.__enter__()
    assert hook_count(model) == 0


def test_correlation_and_top_region_overlap_on_constructed_maps():
    ramp = torch.arange(100, dtype=torch.float32).reshape(10, 10)
    assert cam_correlation(ramp, 0.5 * ramp + 3).item() == pytest.approx(1.0)
    assert cam_correlation(ramp, -ramp).item() == pytest.approx(-1.0)
    assert torch.isnan(cam_correlation(ramp, torch.ones(10, 10))).all()
    # Top 20% = 20 pixels. a's are rows 0-1, b's rows 1-2: 10 shared of 30 -> 1/3; rows 8-9: disjoint.
    a, b, c = torch.zeros(10, 10), torch.zeros(10, 10), torch.zeros(10, 10)
    a[0:2], b[1:3], c[8:10] = 1.0, 1.0, 1.0
    a, b, c = a + 1e-3 * ramp.flip(0), b + 1e-3 * ramp.flip(0), c + 1e-3 * ramp  # strict order inside regions
    assert top_region_overlap(a, b, 0.2).item() == pytest.approx(1 / 3)
    assert top_region_overlap(a, c, 0.2).item() == 0.0
    assert top_region_overlap(a, a, 0.2).item() == 1.0
    # An all-zero map (no evidence for the class) has no top region: undefined, not a perfect overlap.
    assert torch.isnan(top_region_overlap(torch.zeros(10, 10), torch.zeros(10, 10), 0.2)).all()
    batch = top_region_overlap(torch.stack([a, a]), torch.stack([b, c]), 0.2)
    assert batch.tolist() == pytest.approx([1 / 3, 0.0])
    # A mask keeps only the counted pixels: b follows a on the left half and runs against it on the right.
    left = torch.zeros(10, 10, dtype=torch.bool)
    left[:, :5] = True
    against = torch.where(left, ramp, -ramp)
    assert cam_correlation(ramp, against, left).item() == pytest.approx(1.0)
    assert cam_correlation(ramp, against).item() < 0.5
    # Top 20% of the 50 masked pixels = 10 pixels; outside the mask nothing counts, however high.
    inside = torch.where(left, ramp, 1000.0)
    assert top_region_overlap(inside, ramp, 0.2, left).item() == 1.0
    assert top_region_overlap(inside, ramp, 0.2).item() == 0.0
    with pytest.raises(ValueError, match="mask"):
        cam_correlation(ramp, ramp, torch.ones(3, 10, 10, dtype=torch.bool))
    with pytest.raises(ValueError, match="top_fraction"):
        top_region_overlap(a, b, 1.5)
    with pytest.raises(ValueError, match="same shape"):
        cam_correlation(a, torch.zeros(5, 5))


def test_agreement_table_identical_variations_agree_fully(sample_data):
    train = sample_data.train
    sources = torch.cat([torch.nonzero(train.labels == c).flatten()[:2] for c in (1, 2)])
    source_ids = [train.ids[i] for i in sources.tolist()]
    model, spec = small_model("cnn")
    with CamExplainer(model, spec) as explainer:
        # A "variation" that is the source itself must give the same map: correlation 1, overlap 1.
        table = agreement_table(explainer, train, train.images[sources], source_ids, target_class=None, seed=1,
                                synthetic_ids=[f"copy of {s}" for s in source_ids])
        whole = agreement_table(explainer, train, train.images[sources], source_ids, brain_threshold=None, seed=1)
        with pytest.raises(ValueError, match="not in the real split"):
            agreement_table(explainer, train, train.images[sources[:1]], ["nowhere/1"])
    assert set(table["pair_kind"]) == set(PAIR_KINDS)
    assert len(table) == 2 * 2 * len(sources)  # two kinds x two metrics per source
    synthetic = table[table["pair_kind"] == PAIR_KINDS[0]]
    assert synthetic["value"].notna().sum() >= 4
    assert synthetic["value"].dropna().to_numpy() == pytest.approx(1.0)
    assert synthetic["other_id"].str.startswith("copy of ").all()
    # Over whole slices the shared dark background adds agreement: unrelated pairs correlate more than in the brain.
    def median_baseline_correlation(t):
        return t[(t["pair_kind"] == PAIR_KINDS[1]) & (t["metric"] == "correlation")]["value"].median()
    assert median_baseline_correlation(whole) > median_baseline_correlation(table)
    baseline = table[table["pair_kind"] == PAIR_KINDS[1]]
    assert (baseline["source_id"] != baseline["other_id"]).all()
    label_of = dict(zip(train.ids, train.labels.tolist()))
    assert all(label_of[s] == label_of[o] for s, o in zip(baseline["source_id"], baseline["other_id"]))
    assert set(table["explained_class"]) == {CLASS_NAMES[1], CLASS_NAMES[2]}  # None: each source's own class

    summary = summarize_agreement(table)
    assert set(summary["pair_kind"]) == set(PAIR_KINDS) and (summary["pairs"] + summary["undefined"] == 2).all()
    row = summary[(summary["class_name"] == CLASS_NAMES[2]) & (summary["metric"] == "correlation")]
    expected = 1.0 - baseline[(baseline["class_name"] == CLASS_NAMES[2])
                              & (baseline["metric"] == "correlation")]["value"].median()
    assert row["lead_over_baseline"].iloc[0] == pytest.approx(expected)


def corner_dataset(n: int, size: int = 32, patch: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise slices; label 1 when a bright patch sits in the top-left corner, 0 when there is none."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 120, (n, 1, size, size), generator=gen).to(torch.uint8)
    labels = torch.arange(n) % 2
    images[labels == 1, :, :patch, :patch] = 255
    return images, labels


def test_cam_of_a_model_trained_on_a_corner_lights_that_corner():
    model, spec = small_model("cnn", seed=1)
    images, labels = corner_dataset(256)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    x = spec.prepare(images)
    for _ in range(4):  # 4 epochs of batch 32 are plenty for this rule
        for batch in torch.randperm(len(x), generator=torch.Generator().manual_seed(0)).split(32):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x[batch]), labels[batch]).backward()
            optimizer.step()
    test_images, test_labels = corner_dataset(16, seed=5)
    with CamExplainer(model, spec) as explainer:
        assert (explainer.probabilities(test_images).argmax(1) == test_labels).float().mean() == 1.0
        cams = explainer.explain(test_images[test_labels == 1], target_class=1)
    corner = cams[:, :16, :16].sum((1, 2)) / cams.sum((1, 2))  # the top-left quadrant: a quarter of the pixels
    # Uniform maps would put 25% there; measured 0.63-0.80 per image over three model seeds.
    assert corner.mean() > 0.6 and corner.min() > 0.5, f"share of CAM mass in the trained corner: {corner.tolist()}"


def test_overlay_colours_the_map_over_the_slice():
    image = random_slices(1, 32)[0]
    cam = torch.zeros(32, 32)
    cam[:8, :8] = 1.0
    overlay = overlay_cam(image, cam)
    assert overlay.shape == (32, 32, 3) and overlay.dtype == np.uint8
    # jet: the hot corner is red-dominant, the cold rest blue-dominant
    assert overlay[:8, :8, 0].mean() > overlay[:8, :8, 2].mean()
    assert overlay[16:, 16:, 2].mean() > overlay[16:, 16:, 0].mean()
    with pytest.raises(ValueError, match="differ in size"):
        overlay_cam(image, torch.zeros(16, 16))
