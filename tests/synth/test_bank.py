"""The SyntheticBank's bookkeeping: plan, top-up, isolation of sources, fingerprints."""

from __future__ import annotations

import pytest
import torch

from mri_synth.synth import SourceResult, SyntheticBank, fingerprint_of, variant_seed
from mri_synth.synth.base import from_image_bytes


class ShiftGenerator:
    """A free local generator for bank tests: variant v of a source is the source brightened by v + 1."""

    name = "shift"
    sources_per_call = 2
    variants_per_call = 2

    def __init__(self, step: int = 1) -> None:
        self.step = step
        self.calls: list[tuple[tuple[str, ...], int, int]] = []

    @property
    def fingerprint(self) -> str:
        return fingerprint_of(self.name, {"step": self.step})

    def describe(self) -> dict:
        return {"name": self.name, "model": "shift", "step": self.step}

    def estimate_cost_usd(self, n_images: int) -> float:
        return 0.0

    def generate(self, images, labels, ids, n_variants, seed, *, first_variant=0):
        self.calls.append((tuple(ids), first_variant, n_variants))
        return [SourceResult(source_id=sid, model="shift", seeds=[variant_seed(seed, sid, v) for v in
                                                                  range(first_variant, first_variant + n_variants)],
                             images=torch.stack([(img.int() + self.step * (v + 1)).clamp(0, 255).to(torch.uint8)
                                                 for v in range(first_variant, first_variant + n_variants)]))
                for img, sid in zip(images, ids)]


def sources(n: int):
    images = (torch.arange(n, dtype=torch.uint8) * 10).view(n, 1, 1, 1).expand(n, 1, 128, 128).contiguous()
    return images, torch.arange(n) % 4, [f"train/{i:05d}" for i in range(n)]


def test_fill_plans_calls_and_tops_up_without_repeating(tmp_path):
    images, labels, ids = sources(5)
    gen, bank = ShiftGenerator(), SyntheticBank(tmp_path)
    first = bank.fill(gen, images, labels, ids, n_variants=2, seed=3, progress=False)
    assert first.made == 10 and first.calls_sent == 3  # 5 sources, 2 per call
    assert all(call[1:] == (0, 2) for call in gen.calls)
    gen.calls.clear()
    more = bank.fill(gen, images, labels, ids, n_variants=3, seed=3, progress=False)
    assert (more.already_done, more.made) == (10, 5) and all(c[1:] == (2, 1) for c in gen.calls)
    m = bank.manifest()
    assert len(m) == 15 and set(m.status) == {"ok"} and m.cost_usd.sum() == 0
    row = m[(m.source_id == ids[1]) & (m.variant == 2)].iloc[0]
    assert row.seed == variant_seed(3, ids[1], 2) and row.label == 1
    stored = from_image_bytes((tmp_path / gen.fingerprint / row.path).read_bytes())
    assert torch.equal(stored, images[1] + 3)  # PNG storage is lossless


def test_sample_returns_only_variants_of_the_given_sources(tmp_path):
    images, labels, ids = sources(6)
    bank = SyntheticBank(tmp_path)
    bank.fill(ShiftGenerator(), images, labels, ids, n_variants=3, progress=False)
    subset = [ids[0], ids[3], ids[5]]
    out, out_labels, syn_ids, src = bank.sample(subset, k=7, seed=11)
    assert set(src) <= set(subset) and out.shape == (7, 1, 128, 128)
    assert sorted(src.count(s) for s in subset) == [2, 2, 3]  # spread evenly before any source repeats
    assert len(set(syn_ids)) == 7 and all(s.split("/", 1)[1].rsplit("/", 1)[0] in subset for s in syn_ids)
    for image, source in zip(out, src):  # each image really is a variant of its named source
        delta = int(image[0, 0, 0]) - int(images[ids.index(source), 0, 0, 0])
        assert 1 <= delta <= 3
    assert out_labels.tolist() == [int(labels[ids.index(s)]) for s in src]
    again = bank.sample(subset, k=7, seed=11)
    assert again[2] == syn_ids and torch.equal(again[0], out)
    assert bank.sample(subset, k=7, seed=12)[2] != syn_ids
    with pytest.raises(ValueError, match=r"n_variants=4"):
        bank.sample(subset, k=10, seed=0)


def test_two_generators_need_a_fingerprint(tmp_path):
    images, labels, ids = sources(2)
    bank = SyntheticBank(tmp_path)
    a, b = ShiftGenerator(1), ShiftGenerator(5)
    assert a.fingerprint != b.fingerprint
    bank.fill(a, images, labels, ids, n_variants=1, progress=False)
    bank.fill(b, images, labels, ids, n_variants=1, progress=False)
    with pytest.raises(ValueError, match="pass generator_fingerprint"):
        bank.sample(ids, k=1, seed=0)
    out = bank.sample(ids, k=2, seed=0, generator_fingerprint=b.fingerprint)[0]
    assert sorted(out[:, 0, 0, 0].tolist()) == [5, 15]
    with pytest.raises(ValueError, match="fill the bank first"):
        bank.sample(["test/00001"], k=1, seed=0)


def test_bad_sources_are_refused_with_a_fix(tmp_path):
    images, labels, ids = sources(2)
    with pytest.raises(ValueError, match="uint8"):
        SyntheticBank(tmp_path).fill(ShiftGenerator(), images.float(), labels, ids, 1, progress=False)
    with pytest.raises(ValueError, match="unique"):
        SyntheticBank(tmp_path).fill(ShiftGenerator(), images, labels, [ids[0]] * 2, 1, progress=False)
