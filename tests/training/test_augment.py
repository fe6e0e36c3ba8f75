"""Augmentation policies: torchvision's ops reproduced image by image, independent draws per image, shapes kept."""


import pytest
import torch
from torchvision.transforms import v2

from mri_synth.chapters.training import ArchitectureStudy
from mri_synth.study import trials as study
from mri_synth.training import augment
from mri_synth.training.augment import POLICIES, PolicyAugment, apply_op, make_augment
from mri_synth.training.settings import TrainConfig

RANDOM_POLICIES = [p for p in POLICIES if p != "none"]

# Several magnitudes per op (cycled over the images), including the edge cases of torchvision's bins.
MAGNITUDES = {
    "ShearX": [0.3, -0.2, 0.99], "ShearY": [0.3, -0.99], "TranslateX": [20.7, -33.2, 0.0],
    "TranslateY": [12.0, -5.5], "Rotate": [30.0, -13.5, 90.0, 135.0], "Brightness": [0.9, -0.5, 0.33],
    "Color": [0.5], "Contrast": [0.9, -0.7, 0.33], "Sharpness": [0.9, -0.9, 0.33], "Posterize": [4, 6, 8, 2],
    "Solarize": [0.5, 0.2, 1.0, 0.0], "AutoContrast": [0.0], "Equalize": [0.0], "Invert": [0.0],
}


@pytest.fixture(scope="module")
def images(sample_data):
    return sample_data.train.images[:8]


@pytest.mark.parametrize("op", list(MAGNITUDES))
def test_each_op_matches_torchvision_image_by_image(images, op):
    magnitude = torch.tensor([MAGNITUDES[op][i % len(MAGNITUDES[op])] for i in range(len(images))])
    batched = apply_op(images, op, magnitude)
    reference = v2.AutoAugment()
    expected = torch.stack([
        reference._apply_image_or_video_transform(image, op, float(m), interpolation=v2.InterpolationMode.NEAREST,
                                                  fill=reference._fill)
        for image, m in zip(images, magnitude)
    ])
    assert torch.equal(batched, expected)


@pytest.mark.parametrize("policy", POLICIES)
def test_keeps_shape_dtype_and_input(images, policy):
    before = images.clone()
    out = make_augment(policy)(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == torch.uint8 and out.device == images.device
    assert torch.equal(images, before)  # the caller's batch is never modified


@pytest.mark.parametrize("policy", RANDOM_POLICIES)
def test_images_of_one_batch_get_different_draws(images, policy):
    batch = images[:1].repeat(32, 1, 1, 1)  # 32 copies of one image
    out = make_augment(policy)(batch, torch.Generator().manual_seed(0))
    distinct = torch.unique(out.flatten(1), dim=0)
    # torchvision v2 on a batch would make all 32 identical; per-image draws give many different results.
    assert len(distinct) >= 8


@pytest.mark.parametrize("policy", ["autoaugment", "randaugment", "trivialaugment"])
def test_plan_draws_different_ops_per_image(policy):
    plan = PolicyAugment(policy).draw(64, 128, 128, torch.Generator().manual_seed(0))
    ops = torch.stack([step_ops for step_ops, _ in plan], dim=1)  # [images, steps]
    assert len(torch.unique(ops, dim=0)) > 5


@pytest.mark.parametrize("policy", RANDOM_POLICIES)
def test_same_seed_same_images_other_seed_differs(images, policy):
    augment = make_augment(policy)
    first = augment(images, torch.Generator().manual_seed(7))
    again = augment(images, torch.Generator().manual_seed(7))
    other = augment(images, torch.Generator().manual_seed(8))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_basic_policy_is_mild(images):
    out = make_augment("basic")(images, torch.Generator().manual_seed(0)).float()
    src = images.float()
    # Small rotations/shifts and +-10% intensity keep the brain where it was and about as bright.
    assert (out.mean(dim=(1, 2, 3)) / src.mean(dim=(1, 2, 3))).sub(1).abs().max() < 0.25
    flipped = (out - src.flip(-1)).abs().mean(dim=(1, 2, 3)) < (out - src).abs().mean(dim=(1, 2, 3))
    assert 0 < flipped.sum() < len(images)  # some images flipped, some not


def test_bad_input_and_unknown_policy_are_explained(images):
    with pytest.raises(ValueError, match="uint8"):
        make_augment("autoaugment")(images.float())
    with pytest.raises(ValueError, match="choose one of"):
        make_augment("cutmix")


def test_a_policy_registered_once_is_an_arm_and_a_training_option():
    augment.register_policy("vflip", lambda: lambda images, generator=None: images.flip(-2))
    try:
        assert study.parse_arm("vflip", 0.3) == {"augment": "vflip"}
        assert study.TrialSpec(augment="vflip").policy == "100% real + vflip"
        assert TrainConfig(augment="vflip").augment == "vflip"
        x = torch.arange(4, dtype=torch.uint8).view(1, 1, 2, 2)
        assert torch.equal(augment.make_augment("vflip")(x), x.flip(-2))
        assert [s.augment for s in ArchitectureStudy(arms=("vflip",), n_seeds=1).specs] == ["vflip", "vflip"]
    finally:
        augment.POLICIES.pop("vflip")
    with pytest.raises(ValueError, match="unknown augmentation policy 'vflip'"):
        augment.make_augment("vflip")
