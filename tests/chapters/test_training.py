"""Notebooks 04-06's ArchitectureStudy: its checks, its grid of trials, its plan."""

import pytest

from mri_synth.chapters.training import ArchitectureStudy
from mri_synth.training.settings import TrainSettings


def test_unknown_precision_is_refused_with_the_choices():
    with pytest.raises(ValueError, match=r"precision must be one of \('auto', 'fp32', 'bf16'\)"):
        ArchitectureStudy(precision="fp16")


def test_the_default_grid_and_its_plan():
    config = ArchitectureStudy()
    assert len(config.specs) == 5 * (1 + 4)  # 5 repeats; 100% real alone, 30% real with its four arms
    assert {s.seed for s in config.specs} == set(range(5)) and {s.split for s in config.specs} == {"slice"}
    plan = config.plan()
    assert plan.trials.tolist() == [5] * 5 and plan.index.names == ["split", "real_fraction", "policy"]
    assert plan.loc[("slice", 0.3, "30% real + autoaugment"), "trials"] == 5
    assert ("slice", 1.0, "100% real + autoaugment") not in plan.index  # autoaugment@0.3: at 30% only


def test_every_spec_carries_the_settings_the_split_and_the_preset(tmp_path):
    config = ArchitectureStudy(arms=("none", "diffusion"), real_fractions=(0.3,), splits=("slice", "subject"),
                               n_seeds=2, first_seed=3, lr=3e-4, epochs=2, equal_steps=True, batch_size=16,
                               input_size=32, precision="fp32", diffusion_preset="toy", pretrained=False,
                               results_dir=str(tmp_path))
    assert len(config.specs) == 2 * 2 * 2 and {s.seed for s in config.specs} == {3, 4}
    assert [s.split for s in config.specs].count("subject") == 4
    assert all(TrainSettings.of(s) == config.training for s in config.specs)
    assert {s.generator for s in config.specs if s.synthetic == "diffusion"} == {"toy"}
    assert all(s.pretrained is False for s in config.specs)
    assert config.results == tmp_path / "cnn"  # the run writes the architecture's folder


def test_each_evaluation_trains_its_own_frozen_budget():
    config = ArchitectureStudy(splits=("slice", "subject"), epochs=10, subject_epochs=5, n_seeds=1)
    assert {(s.split, s.epochs) for s in config.specs} == {("slice", 10), ("subject", 5)}
    same = ArchitectureStudy(splits=("slice", "subject"), epochs=10, n_seeds=1)
    assert {s.epochs for s in same.specs} == {10}
    # a budget given for subject leaves the slice trials (and their keys) as they were
    assert {s.key for s in config.specs if s.split == "slice"} == {s.key for s in same.specs if s.split == "slice"}
    own_lr = ArchitectureStudy(splits=("slice", "subject"), epochs=10, lr=3e-4, subject_lr=1e-3, n_seeds=1)
    assert {(s.split, s.lr) for s in own_lr.specs} == {("slice", 3e-4), ("subject", 1e-3)}


@pytest.mark.parametrize("bad, message", [
    (dict(arch="alexnet9"), "alexnet9"),
    (dict(n_seeds=0), "n_seeds must be a positive int"),
    (dict(arms=("dalle2",)), "unknown arm part 'dalle2'"),
    (dict(splits=("people",)), "people"),
    (dict(equal_steps=True, max_steps=10), "set either max_steps"),
    (dict(subject_epochs=-1), "subject_epochs must be 0"),
    (dict(subject_lr=1.5), r"subject_lr must be 0 \(the same as lr\) or in \(0, 1\), got 1.5"),
])
def test_bad_parameters_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        ArchitectureStudy(**bad)


def test_the_label_says_how_a_timm_model_was_trained():
    assert ArchitectureStudy(arch="cnn").label == "cnn"
    scratch = "vit_tiny (from scratch, not the thesis's ImageNet-pretrained setting)"
    assert ArchitectureStudy(arch="vit_tiny").label == scratch
    assert ArchitectureStudy(arch="resnet18", pretrained=True).label == "resnet18 (ImageNet-pretrained)"
