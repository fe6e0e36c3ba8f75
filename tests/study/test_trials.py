"""Trial specs: content-addressed keys that never rename a recorded trial, checks, the grid of arms."""

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import pytest

from mri_synth.study import trials as S
from mri_synth.synth import registry

ROOT = Path(__file__).resolve().parents[2]
RECORDED_TRIALS = sorted((ROOT / "benchmarks" / "results").glob("**/trials/*.json"))
"""Every committed trial file: its name is its spec's key, as the run that wrote it computed it."""


def test_key_is_stable_and_content_addressed():
    spec = S.TrialSpec(arch="cnn", real_fraction=0.3, synthetic="diffusion", synthetic_fraction=0.7, seed=4,
                       generator="quick")
    assert spec.key == S.TrialSpec(seed=4, synthetic_fraction=0.7, synthetic="diffusion", real_fraction=0.3,
                                   generator="quick").key
    # a golden value: a key that silently changed would orphan every finished trial of a running study (this one
    # was the default label's until the default became latent-cpu: a trial that named quick keeps its key)
    assert spec.key == "c444c51db70c2d85"
    # a diffusion arm that names no preset carries the registry's default: other images, so another key
    default = replace(spec, generator="")
    assert default.generator == registry.DEFAULT_DIFFUSION_PRESET and default.key != spec.key
    # arms without a generator carry no generator label: the diffusion preset does not change their keys
    plain = S.TrialSpec(real_fraction=0.3, seed=4)
    assert plain.key == replace(plain, generator="toy").key == S.TrialSpec(real_fraction=0.3, seed=4,
                                                                           generator="gpu").key
    assert plain.key == "263f847324b8a8e1"
    for change in [dict(seed=5), dict(real_fraction=0.4), dict(augment="basic"), dict(max_steps=100),
                   dict(synthetic_classes=("Moderate_Demented",))]:
        assert replace(spec, **change).key != spec.key
    # class order does not matter: the classes are a set
    a = replace(spec, synthetic_classes=("Moderate_Demented", "Mild_Demented"))
    assert a.key == replace(spec, synthetic_classes=("Mild_Demented", "Moderate_Demented")).key


@pytest.mark.parametrize("bad, message", [
    (dict(real_fraction=0), r"real_fraction must be a number in \(0, 1\]"),
    (dict(synthetic="dalle"), "synthetic must be one of"),
    (dict(synthetic="diffusion"), "use synthetic='none' exactly when nothing is added"),
    (dict(augment="cutmix"), "augment must be one of"),
    (dict(synthetic="repeat", synthetic_fraction=0.7, synthetic_classes=("Severe",)), "unknown synthetic_classes"),
])
def test_bad_specs_are_refused_with_the_fix(bad, message):
    with pytest.raises(ValueError, match=message):
        S.TrialSpec(**bad)


def test_grid_pairs_arms_and_skips_empty_fills():
    grid = S.study_grid(["cnn"], [1.0, 0.3], ["none", "repeat", "diffusion:Mild_Demented,Moderate_Demented",
                                              "diffusion+autoaugment"], range(3), epochs=2)
    labels = {s.policy for s in grid}
    assert "100% real + 0% repeat" not in labels and "100% real" in labels
    assert {"30% real + 70% repeat", "30% real + 70% diffusion (Mild+Moderate)",
            "30% real + 70% diffusion + autoaugment"} <= labels
    assert len(grid) == 3 * (1 + 4) and len({s.key for s in grid}) == len(grid)
    only = S.study_grid(["cnn"], [1.0, 0.3], ["none", "autoaugment@0.3"], [0])
    assert [s.policy for s in only] == ["100% real", "30% real", "30% real + autoaugment"]
    with pytest.raises(ValueError, match="unknown arm part 'dalle2'"):
        S.study_grid(["cnn"], [0.3], ["dalle2"], [0])


def test_every_committed_trial_file_is_named_by_its_specs_key():
    assert len(RECORDED_TRIALS) >= 180  # 188 when this was written: the test cannot pass on an empty glob
    wrong = {}
    for path in RECORDED_TRIALS:
        spec = S.TrialSpec.from_dict(json.loads(path.read_text())["spec"])
        if spec.key != path.stem:
            wrong[str(path.relative_to(ROOT))] = spec.key
    assert wrong == {}, f"{len(wrong)} recorded trials would be renamed (run again) by this version's keys"


def recorded_key(spec: S.TrialSpec) -> str:
    """The key as the recorded study computed it: the hash of its fields (RECORDED_FIELDS) and nothing else."""
    values = {k: v for k, v in asdict(spec).items() if k in S.RECORDED_FIELDS}
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


def test_a_field_added_after_the_recorded_study_enters_the_key_only_off_its_default():
    assert "precision" not in S.RECORDED_FIELDS and S.RECORDED_FIELDS <= set(S.TrialSpec.__dataclass_fields__)
    arm = dict(real_fraction=0.3, synthetic="repeat", synthetic_fraction=0.7, seed=3)
    for fields in ({}, arm):
        assert S.TrialSpec(**fields, precision="auto").key == recorded_key(S.TrialSpec(**fields))
        assert S.TrialSpec(**fields, precision="fp32").key != S.TrialSpec(**fields).key
        assert S.TrialSpec(**fields, precision="bf16").key not in (S.TrialSpec(**fields).key,
                                                                   S.TrialSpec(**fields, precision="fp32").key)
    # the recorded fields enter every key, at their defaults too; a newer one only where it is set
    assert set(S.TrialSpec().key_fields()) == S.RECORDED_FIELDS
    assert S.TrialSpec(precision="fp32").key_fields() == {**S.TrialSpec().key_fields(), "precision": "fp32"}
    # held_out_curve=False keeps the reported numbers but not the test curve: a trial of its own, recorded ones kept
    assert "held_out_curve" not in S.RECORDED_FIELDS and S.TrialSpec(held_out_curve=True).key == S.TrialSpec().key
    assert S.TrialSpec(held_out_curve=False).key_fields() == {**S.TrialSpec().key_fields(), "held_out_curve": False}


@dataclass(frozen=True)
class NewerSpec(S.TrialSpec):
    """A later version's spec: one more field, with a default that means "as before"."""

    mixup: float = 0.0


def test_adding_a_field_with_a_default_renames_no_trial():
    arm = dict(arch="cnn", real_fraction=0.3, synthetic="diffusion", synthetic_fraction=0.7, seed=4,
               generator="quick")
    for fields in ({}, arm, dict(real_fraction=0.3, seed=4)):
        assert NewerSpec(**fields).key == S.TrialSpec(**fields).key
        assert NewerSpec(**fields, mixup=0.2).key != S.TrialSpec(**fields).key
        assert NewerSpec(**fields, mixup=0.2).key != NewerSpec(**fields, mixup=0.4).key
    assert NewerSpec(**arm).key == "c444c51db70c2d85"  # the golden key above
    path = RECORDED_TRIALS[0]  # a recorded trial read by the newer version keeps its file
    assert NewerSpec.from_dict(json.loads(path.read_text())["spec"]).key == path.stem


def test_from_dict_refuses_fields_this_version_does_not_know():
    stored = asdict(S.TrialSpec(real_fraction=0.3))
    with pytest.raises(ValueError, match=r"a trial spec with fields \['mixup'\] that this version does not know"):
        S.TrialSpec.from_dict({**stored, "mixup": 0.2})
    assert S.TrialSpec.from_dict(stored) == S.TrialSpec(real_fraction=0.3)
    older = {k: v for k, v in stored.items() if k != "protocol"}  # stored before the protocol field: chosen on test
    assert S.TrialSpec.from_dict(older).protocol == 1
    listed = {**stored, "synthetic": "repeat", "synthetic_fraction": 0.7, "synthetic_classes": ["Mild_Demented"]}
    assert S.TrialSpec.from_dict(listed).synthetic_classes == ("Mild_Demented",)  # JSON lists back to tuples


def test_budget_fold_policy_and_table_columns():
    assert S.TrialSpec().budget == "epochs" and S.TrialSpec(max_steps=50).budget == "steps"
    assert S.TrialSpec(equal_steps=True).budget == "equal_steps"
    assert S.TrialSpec(seed=7).fold == 0 and S.TrialSpec(split="subject", seed=7).fold == 2  # repeat r: fold r % 5
    spec = S.TrialSpec(real_fraction=0.3, synthetic="repeat", synthetic_fraction=0.7, augment="basic",
                       synthetic_classes=("Moderate_Demented", "Mild_Demented"), precision="fp32")
    assert spec.policy == "30% real + 70% repeat (Mild+Moderate) + basic"
    columns = spec.table_columns()
    assert columns["trial_key"] == spec.key and columns["synthetic_classes"] == "Mild_Demented+Moderate_Demented"
    assert columns["generator_kind"] == "control" and columns["precision"] == "fp32" and columns["max_steps"] == 0
    assert columns["pretrained"] == "default" and S.TrialSpec(pretrained=False).table_columns()["pretrained"] == "no"
    assert S.generator_kind("none") == "none" and S.synthetic_kinds()[:2] == S.CONTROL_ARMS


def test_parse_arm_reads_the_parts_joined_by_plus():
    assert S.parse_arm("none", 0.3) == {}
    assert S.parse_arm("autoaugment", 0.3) == {"augment": "autoaugment"}
    assert S.parse_arm("repeat+basic", 0.3) == {"synthetic": "repeat", "synthetic_fraction": 0.7, "augment": "basic"}
    assert S.parse_arm("diffusion:Mild_Demented,Moderate_Demented", 0.1) == {
        "synthetic": "diffusion", "synthetic_fraction": 0.9,
        "synthetic_classes": ("Mild_Demented", "Moderate_Demented")}
    assert S.parse_arm("repeat", 1.0)["synthetic_fraction"] == 0  # nothing to fill: the grid leaves it out
