"""The folder generator: images made elsewhere feed the bank by source id."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mri_synth.data.types import CLASS_NAMES
from mri_synth.synth import FolderGenerator, SyntheticBank
from mri_synth.synth.base import to_png


def sources(n: int):
    images = (torch.arange(n, dtype=torch.uint8) * 10).view(n, 1, 1, 1).expand(n, 1, 128, 128).contiguous()
    return images, torch.arange(n) % 4, [f"train/{i:05d}" for i in range(n)]


def test_folder_generator_feeds_the_bank_by_source_id(tmp_path):
    images, labels, ids = sources(3)
    root = tmp_path / "made_elsewhere"
    for i, (image, label) in enumerate(zip(images, labels.tolist())):
        folder = root / CLASS_NAMES[label].replace("_", "")  # "MildDemented" spelling is accepted
        folder.mkdir(parents=True, exist_ok=True)
        if i < 2:
            for v in range(2):
                (folder / f"{ids[i].replace('/', '%2F')}__v{v}.png").write_bytes(to_png(image + 50 * (v + 1)))
        (folder / "unpaired.png").write_bytes(to_png(image))
    gen = FolderGenerator(root)
    assert gen.source_ids == ids[:2] and gen.estimate_cost_usd(100) == 0
    bank = SyntheticBank(tmp_path / "bank")
    summary = bank.fill(gen, images, labels, ids, n_variants=2, progress=False)
    assert (summary.made, summary.refused) == (4, 2)  # the third source has no file: settled as missing
    m = bank.manifest()
    assert set(m[m.source_id == ids[2]].status) == {"missing"}
    out, _, _, src = bank.sample(ids[:1], k=2, seed=0)
    assert sorted(out[:, 0, 0, 0].tolist()) == [50, 100] and set(src) == {ids[0]}
    all_images, all_labels, all_sources = gen.load_all()
    assert len(all_images) == 7 and all_sources.count(None) == 3
    (root / "MildDemented" / f"{ids[0].replace('/', '%2F')}__v0.png").rename(root / "MildDemented" / "x.png")
    assert FolderGenerator(root).fingerprint != gen.fingerprint  # a changed folder is another generator


def test_folder_generator_rejects_unknown_class_folder(tmp_path):
    (tmp_path / "Demented_Maybe").mkdir()
    (tmp_path / "Demented_Maybe" / "a.png").write_bytes(to_png(torch.zeros(1, 128, 128, dtype=torch.uint8)))
    with pytest.raises(ValueError, match="unknown class folder"):
        FolderGenerator(tmp_path)
    with pytest.raises(FileNotFoundError, match="sub-folder per class"):
        FolderGenerator(Path(tmp_path) / "nowhere")
