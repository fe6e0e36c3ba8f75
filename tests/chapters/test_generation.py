"""Notebook 02's config and helpers: checked values, the stratified real sample, the cost table."""

from __future__ import annotations

import pytest

from mri_synth.chapters.generation import GenerationConfig, cost_so_far, real_sample
from mri_synth.data.types import CLASS_NAMES
from mri_synth.synth import FolderGenerator, SyntheticBank
from mri_synth.synth.base import to_png


@pytest.mark.parametrize("bad, match", [
    (dict(generator="dalle"), "unknown generator 'dalle'"),
    (dict(real_fraction=1.5), "real_fraction"),
    (dict(diffusion_strength=1.5), "strength"),
    (dict(diffusion_preset="huge"), "diffusion preset must be one of"),
])
def test_generation_config_rejects_bad_values(bad, match):
    with pytest.raises(ValueError, match=match):
        GenerationConfig(**bad)


def test_real_sample_is_stratified_and_cost_table_counts(sample_data, tmp_path):
    config = GenerationConfig(real_fraction=0.3, bank_dir=str(tmp_path / "bank"))
    sources = real_sample(sample_data, config)
    assert all(n >= 1 for n in sources.class_counts()) and set(sources.ids) <= set(sample_data.train.ids)
    assert cost_so_far(config.bank()).empty
    folder = tmp_path / "made"
    (folder / CLASS_NAMES[int(sources.labels[0])]).mkdir(parents=True)
    name = sources.ids[0].replace("/", "%2F")
    (folder / CLASS_NAMES[int(sources.labels[0])] / f"{name}__v0.png").write_bytes(to_png(sources.images[0]))
    SyntheticBank(config.bank_dir).fill(FolderGenerator(folder), sources.images, sources.labels, sources.ids, 1,
                                       progress=False)
    table = cost_so_far(config.bank())
    assert table.loc[0, "ok"] == 1 and table.loc[0, "missing"] == len(sources) - 1 and table.loc[0, "cost_usd"] == 0
