"""The latent generator's settings: checks that say what to change, presets by name, and which settings shape the
weights (the cache's key) and which only how they are sampled."""

from dataclasses import asdict

import pytest

from mri_synth.synth.latent_config import PRESETS, LatentDiffusionConfig
from mri_synth.synth.trained import SAMPLING_FIELDS, training_settings


@pytest.mark.parametrize("bad, match", [
    (dict(strength=0.8, train_max_strength=0.5), "train_max_strength"),
    (dict(ae_channels=(12, 24), ae_norm_groups=8), "multiples of ae_norm_groups"),
    (dict(channels=(12, 24)), "multiples of 8"),
    (dict(ae_channels=(8, 8, 8, 8, 8)), "1-4 levels"),
    (dict(ae_channels=(8, 8, 8, 8), channels=(16, 16, 16, 16)), "too small"),
    (dict(ae_steps=0), "ae_steps must be >= 1"),
    (dict(prediction_type="noise"), "prediction_type must be one of"),
    (dict(guidance_scale=2.0), "needs an unconditional model"),
    (dict(class_dropout=1.0), "class_dropout must be in"),
])
def test_config_errors_say_what_to_change(bad, match):
    with pytest.raises(ValueError, match=match):
        LatentDiffusionConfig.toy(**bad)


def test_presets_are_picked_by_name_and_an_unknown_one_is_refused():
    for name in PRESETS:  # "cpu-fast" is the class method cpu_fast
        method = getattr(LatentDiffusionConfig, name.replace("-", "_"))
        assert LatentDiffusionConfig.preset(name, ae_steps=7) == method(ae_steps=7)
    assert LatentDiffusionConfig.cpu().latent_size == 32 and LatentDiffusionConfig.cpu().train_max_strength < 1
    with pytest.raises(ValueError, match=r"must be one of \('toy', 'cpu', 'cpu-fast', 'gpu'\), got 'big'"):
        LatentDiffusionConfig.preset("big")


def test_the_latent_size_follows_the_autoencoders_levels():
    assert LatentDiffusionConfig().latent_size == 32 and LatentDiffusionConfig.toy().latent_size == 32
    assert LatentDiffusionConfig.toy(ae_channels=(8,), channels=(16, 32)).latent_size == 128
    assert LatentDiffusionConfig.toy(ae_channels=(8, 8, 8, 8)).latent_size == 16
    listed = LatentDiffusionConfig.toy(ae_channels=[8, 16, 16], channels=[16.0, 32.0])  # from a profile's lists
    assert listed.ae_channels == (8, 16, 16) and listed.channels == (16, 32) == LatentDiffusionConfig.toy().channels
    assert hash(listed) == hash(LatentDiffusionConfig.toy())  # frozen and hashable: a key


def test_every_count_must_be_at_least_one_and_the_sampler_known():
    with pytest.raises(ValueError, match="train_steps, ddim_steps must be >= 1"):
        LatentDiffusionConfig.toy(train_steps=0, ddim_steps=0)
    with pytest.raises(ValueError, match=r"sampler must be one of \('ddim', 'dpm\+\+', 'unipc'\), got 'euler'"):
        LatentDiffusionConfig.toy(sampler="euler")
    with pytest.raises(ValueError, match="guidance_scale 7.0 needs an unconditional model: set class_dropout > 0"):
        LatentDiffusionConfig.toy(guidance_scale=7.0)
    assert LatentDiffusionConfig.toy(guidance_scale=7.0, class_dropout=0.1).guidance_scale == 7.0


def test_cpu_fast_samples_the_cpu_presets_weights():
    cpu, fast = LatentDiffusionConfig.cpu(), LatentDiffusionConfig.cpu_fast()
    assert training_settings(fast) == training_settings(cpu)  # the weights' cache finds the cpu preset's
    differ = {k for k, v in asdict(fast).items() if v != getattr(cpu, k)}
    assert differ == {"sampler", "ddim_steps", "channels_last", "sample_batch"} and differ <= set(SAMPLING_FIELDS)
    assert (fast.sampler, fast.ddim_steps, fast.channels_last, fast.sample_batch) == ("unipc", 5, True, 8)
    assert LatentDiffusionConfig.cpu_fast(ddim_steps=10).ddim_steps == 10  # an override wins over the preset's
    assert fast != cpu  # the bank keys them apart: other variations
