"""The training settings declared once (``TrainSettings``): defaults, range checks, the carriers that share them,
the command-line flags built from them, and the precision they train in."""

import argparse
from dataclasses import asdict, dataclass, fields

import pytest
import torch

from mri_synth import cli
from mri_synth.chapters.gradcam import GradCamConfig
from mri_synth.chapters.training import ArchitectureStudy
from mri_synth.study.trials import TrialSpec
from mri_synth.training import settings
from mri_synth.training.classifier import ClassifierRecipe
from mri_synth.training.settings import PRECISIONS, TrainConfig, TrainSettings, default_bf16
from mri_synth.training.settings import precision_scope as _precision

DEFAULTS = {"epochs": 10, "max_steps": None, "equal_steps": False, "batch_size": 64, "lr": 1e-3, "weight_decay": 0.0,
            "input_size": 0, "precision": "auto", "held_out_curve": True}
"""The thesis's settings (Adam at 1e-3, 10 epochs), batch 64, the model's own input size, bf16 where native, the
test set predicted at every evaluation."""

CARRIERS = [TrainConfig, TrialSpec, ArchitectureStudy, GradCamConfig, ClassifierRecipe]
"""Everything that carries the settings: what fit takes, a trial, the notebooks' configs, the reference classifier."""


def redeclared(cls: type) -> list[str]:
    """Settings a class between ``cls`` and ``TrainSettings`` declares again (``lr: float = 3e-4`` in a subclass)."""
    return sorted(name for klass in cls.__mro__ if klass is not TrainSettings
                  for name in vars(klass).get("__annotations__", {}) if name in TrainSettings.names())


def test_the_settings_and_their_defaults():
    assert TrainSettings.names() == tuple(DEFAULTS)
    assert asdict(TrainSettings()) == DEFAULTS
    assert PRECISIONS == ("auto", "fp32", "bf16")


@pytest.mark.parametrize("bad, message", [
    (dict(lr=0), r"TrainSettings.lr must be in \(0, 1\), got 0; the thesis used 1e-3"),
    (dict(lr=1), r"TrainSettings.lr must be in \(0, 1\), got 1;"),
    (dict(lr=1.5), r"lr must be in \(0, 1\), got 1.5"),
    (dict(lr=-1e-3), r"lr must be in \(0, 1\), got -0.001"),
    (dict(lr="1e-3"), r"lr must be in \(0, 1\), got '1e-3'"),
    (dict(weight_decay=-1e-4), "TrainSettings.weight_decay must be >= 0, got -0.0001"),
    (dict(weight_decay=None), "weight_decay must be >= 0, got None"),
    (dict(batch_size=0), "TrainSettings.batch_size must be a positive integer, got 0"),
    (dict(batch_size=-8), "batch_size must be a positive integer, got -8"),
    (dict(batch_size=True), "batch_size must be a positive integer, got True"),
    (dict(batch_size=32.0), "batch_size must be a positive integer, got 32.0"),
    (dict(epochs=0), "TrainSettings.epochs must be a positive integer, got 0"),
    (dict(max_steps=-1), "TrainSettings.max_steps must be a positive integer, got -1"),
    (dict(max_steps=False), "max_steps must be a positive integer, got False"),  # False is no "no budget"
    (dict(input_size=-32), r"input_size must be 0 \(the model's own\) or a positive size, got -32"),
    (dict(precision="fp16"), r"TrainSettings.precision must be one of \('auto', 'fp32', 'bf16'\), got 'fp16'"),
    (dict(precision="FP32"), r"precision must be one of \('auto', 'fp32', 'bf16'\), got 'FP32'"),
    (dict(held_out_curve=0), "TrainSettings.held_out_curve must be true or false, got 0"),
    (dict(equal_steps=True, max_steps=100), r"set either max_steps \(a budget in steps\) or equal_steps \(epochs of "
                                            r"the 100% pool\), not both"),
])
def test_out_of_range_settings_are_refused_with_a_message(bad, message):
    with pytest.raises(ValueError, match=message):
        TrainSettings(**bad)


@pytest.mark.parametrize("carrier", CARRIERS, ids=lambda c: c.__name__)
def test_a_carriers_message_names_the_carrier(carrier):
    with pytest.raises(ValueError, match=rf"{carrier.__name__}.lr must be in \(0, 1\), got 2.0"):
        carrier(lr=2.0)
    with pytest.raises(ValueError, match=rf"{carrier.__name__}.precision must be one of .* got 'fp16'"):
        carrier(precision="fp16")


def test_max_steps_zero_means_no_step_budget():
    assert TrainSettings(max_steps=0).max_steps is None
    assert TrainSettings(max_steps=0, equal_steps=True).equal_steps  # 0 is no budget: no clash with equal_steps
    assert TrainSettings(max_steps=0) == TrainSettings()
    assert TrialSpec(max_steps=0).key == TrialSpec().key and TrialSpec(max_steps=0).budget == "epochs"
    assert TrainSettings(max_steps=7).max_steps == 7


def test_settings_are_read_back_from_any_carrier():
    chosen = dict(lr=3e-4, weight_decay=1e-4, epochs=3, batch_size=16, input_size=32, precision="fp32",
                  equal_steps=True)
    expected = TrainSettings(**chosen)
    carriers = [TrainConfig(**chosen, augment="basic", seed=3), TrialSpec(**chosen, arch="cnn", seed=2),
                ArchitectureStudy(**chosen, n_seeds=1), GradCamConfig(**chosen), ClassifierRecipe(**chosen, seed=4),
                argparse.Namespace(**asdict(expected), unrelated="ignored")]
    for carrier in carriers:
        read = TrainSettings.of(carrier)
        assert type(read) is TrainSettings and read == expected, type(carrier).__name__
    assert TrialSpec(**chosen).training == expected and type(TrialSpec().training) is TrainSettings
    with pytest.raises(AttributeError, match="precision"):
        TrainSettings.of(argparse.Namespace(**{k: v for k, v in DEFAULTS.items() if k != "precision"}))


@pytest.mark.parametrize("carrier", CARRIERS, ids=lambda c: c.__name__)
def test_every_carrier_has_exactly_the_settings_with_the_same_defaults(carrier):
    assert issubclass(carrier, TrainSettings)
    declared = {f.name: f.default for f in fields(carrier)}
    assert {name: declared[name] for name in TrainSettings.names()} == DEFAULTS
    assert redeclared(carrier) == [], f"{carrier.__name__} declares {redeclared(carrier)} again: declare a setting " \
                                      "once, in TrainSettings"
    assert TrainSettings.of(carrier()) == TrainSettings()


def test_the_redeclaration_check_catches_a_subclass_that_sets_its_own_default():
    @dataclass(frozen=True)
    class OwnDefault(TrainSettings):
        lr: float = 3e-4

    @dataclass(frozen=True)
    class Grandchild(OwnDefault):
        extra: int = 1

    assert redeclared(OwnDefault) == ["lr"] and redeclared(Grandchild) == ["lr"]
    assert TrainSettings.of(Grandchild()) != TrainSettings()


def test_add_arguments_round_trips_through_argparse():
    parser = argparse.ArgumentParser()
    settings.add_arguments(parser)
    assert TrainSettings.of(parser.parse_args([])) == TrainSettings()
    args = parser.parse_args(["--lr", "3e-4", "--equal-steps", "--precision", "fp32"])
    assert TrainSettings.of(args) == TrainSettings(lr=3e-4, equal_steps=True, precision="fp32")
    args = parser.parse_args(["--epochs", "3", "--max-steps", "40", "--batch-size", "16", "--weight-decay", "1e-4",
                              "--input-size", "32", "--precision", "bf16"])
    assert TrainSettings.of(args) == TrainSettings(epochs=3, max_steps=40, batch_size=16, weight_decay=1e-4,
                                                   input_size=32, precision="bf16")
    assert TrainSettings.of(parser.parse_args(["--no-held-out-curve"])) == TrainSettings(held_out_curve=False)
    assert isinstance(args.lr, float) and isinstance(args.epochs, int) and isinstance(args.weight_decay, float)


def test_add_arguments_refuses_an_unknown_precision_and_takes_other_defaults(capsys):
    parser = argparse.ArgumentParser()
    settings.add_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["--precision", "fp16"])
    assert "invalid choice: 'fp16'" in capsys.readouterr().err
    other = argparse.ArgumentParser()
    settings.add_arguments(other, epochs=3, lr=1e-2)
    assert TrainSettings.of(other.parse_args([])) == TrainSettings(epochs=3, lr=1e-2)
    assert "(default 3)" in other.format_help()


def test_mri_synth_study_has_a_flag_for_every_setting(capsys):
    parser = cli.build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["study", "--help"])
    help_text = capsys.readouterr().out
    flags = ["--" + name.replace("_", "-") for name in TrainSettings.names()]
    assert [flag for flag in flags if flag not in help_text] == []
    assert TrainSettings.of(parser.parse_args(["study"])) == TrainSettings.of(ArchitectureStudy()) == TrainSettings()
    args = parser.parse_args(["study", "--lr", "3e-4", "--equal-steps", "--precision", "fp32"])
    assert TrainSettings.of(args) == TrainSettings(lr=3e-4, equal_steps=True, precision="fp32")


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_use_bf16_per_precision(device, monkeypatch):
    device = torch.device(device)
    assert TrainSettings(precision="fp32").use_bf16(device) is False
    assert TrainSettings(precision="bf16").use_bf16(device) is True
    assert TrainSettings(precision="auto").use_bf16(device) == default_bf16(device)
    # auto on the CPU: bf16 only where the CPU runs it natively (AVX-512 bf16 or AMX)
    for avx512, amx, native in [(False, False, False), (True, False, True), (False, True, True)]:
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512: v)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v)
        assert TrainSettings().use_bf16(device) is (True if device.type == "cuda" else native)
        assert TrainSettings(precision="fp32").use_bf16(device) is False


def test_default_bf16_is_off_when_torch_lacks_the_cpu_probes(monkeypatch):
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    assert default_bf16(torch.device("cpu")) is False
    assert default_bf16(torch.device("cuda")) is True


def test_precision_fp32_turns_tf32_off_inside_the_run_only():
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = True
    try:
        with _precision("fp32"):
            assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
        assert torch.backends.cudnn.allow_tf32
        with _precision("auto"):
            assert torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def test_precision_scope_restores_both_switches_even_after_an_error():
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
        with pytest.raises(KeyError), settings.precision_scope("fp32"):
            assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == (False, False)
            raise KeyError("boom")
        assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == (True, True)
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = False, True
        for precision in ("auto", "bf16"):  # the others leave the switches as the caller set them
            with settings.precision_scope(precision):
                assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == (False, True)
        with settings.precision_scope("fp32"):
            pass
        assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == (False, True)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


@pytest.mark.parametrize("bad,match", [
    (dict(epochs=0), "epochs"), (dict(max_steps=-1), "max_steps"), (dict(batch_size=2.5), "batch_size"),
    (dict(lr=0), "lr"), (dict(augment="mixup"), "choose one of"), (dict(lr_schedule="step"), "lr_schedule"),
    (dict(early_stopping_patience=0), "early_stopping_patience"), (dict(device="tpu9"), "device"),
])
def test_config_rejects_bad_values_with_a_fix(bad, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**bad)


@pytest.mark.parametrize("bad, message", [
    (dict(eval_batch_size=0), "TrainConfig.eval_batch_size must be a positive integer, got 0"),
    (dict(eval_every=0), "TrainConfig.eval_every must be a positive integer, got 0"),
    (dict(seed=1.5), "TrainConfig.seed must be an integer, got 1.5"),
    (dict(seed=True), "TrainConfig.seed must be an integer, got True"),
    (dict(augment="mixup"), "TrainConfig.augment 'mixup' is not a policy; choose one of none, basic"),
    (dict(lr_schedule="step"), r"TrainConfig.lr_schedule 'step': use None or one of \('cosine',\)"),
    (dict(device="tpu9"), "TrainConfig.device 'tpu9' is not a device; use 'auto', 'cpu' or 'cuda'"),
])
def test_train_config_messages_name_the_fix(bad, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**bad)


def test_train_config_resolves_its_device():
    assert TrainConfig(device="cpu").resolved_device() == torch.device("cpu")
    assert TrainConfig().resolved_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="TrainConfig.device is 'cuda:1' but CUDA is not available; use 'auto'"):
            TrainConfig(device="cuda:1").resolved_device()
