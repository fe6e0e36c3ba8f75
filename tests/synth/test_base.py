"""The generator protocol's shared pieces: fingerprints and seeds that never depend on order or chunking, the checks
of source images, lossless PNG storage and decoding of whatever a generator returns, and a fill's summary."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from mri_synth.synth import base


def _images(n: int, size: int = 128) -> torch.Tensor:
    return torch.randint(0, 256, (n, 1, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(n))


def test_fingerprints_are_readable_order_free_and_follow_the_settings():
    a = base.fingerprint_of("diffusion", {"steps": 3, "size": 16})
    assert a == base.fingerprint_of("diffusion", {"size": 16, "steps": 3})
    assert a.startswith("diffusion-") and len(a) == len("diffusion-") + 12 and int(a.split("-")[1], 16) >= 0
    assert a != base.fingerprint_of("diffusion", {"steps": 4, "size": 16})
    assert a != base.fingerprint_of("latent", {"steps": 3, "size": 16})
    assert base.fingerprint_of("x", {"path": base}) == base.fingerprint_of("x", {"path": base})  # str() of the rest


def test_ids_key_is_a_set_key_and_variant_seeds_are_63_bit_and_distinct():
    assert base.ids_key(["b", "a"]) == base.ids_key(["a", "b"]) != base.ids_key(["a"])
    assert len(base.ids_key(["a"])) == 16
    seeds = {base.variant_seed(s, f"train/{i}", v) for s in (0, 1) for i in range(20) for v in range(3)}
    assert len(seeds) == 2 * 20 * 3 and all(0 <= s < 2**63 for s in seeds)
    assert base.variant_seed(3, "train/1", 2) == base.variant_seed(3, "train/1", 2)


@pytest.mark.parametrize("images, error, message", [
    (np.zeros((1, 1, 128, 128), dtype=np.uint8), TypeError, "source images must be a torch.Tensor uint8"),
    (torch.zeros(1, 1, 128, 128), ValueError, r"source images must be uint8\[N, 1, 128, 128\], got torch.float32"),
    (torch.zeros(1, 1, 64, 64, dtype=torch.uint8), ValueError, r"got torch.uint8 \(1, 1, 64, 64\)"),
    (torch.zeros(1, 3, 128, 128, dtype=torch.uint8), ValueError, r"got torch.uint8 \(1, 3, 128, 128\)"),
])
def test_the_image_layout_is_checked_with_a_fix(images, error, message):
    with pytest.raises(error, match=message):
        base.check_sources(images, torch.zeros(1, dtype=torch.long), ["a"])


def test_sources_need_one_label_and_one_unique_id_per_image():
    images = _images(2)
    base.check_sources(images, torch.tensor([0, 1]), ["a", "b"])
    with pytest.raises(ValueError, match="got 2 images, 1 labels and 2 ids; pass one label and one id per image"):
        base.check_sources(images, torch.tensor([0]), ["a", "b"])
    with pytest.raises(ValueError, match="got 2 images, 2 labels and 3 ids"):
        base.check_sources(images, torch.tensor([0, 1]), ["a", "b", "c"])
    with pytest.raises(ValueError, match="source ids must be unique"):
        base.check_sources(images, torch.tensor([0, 1]), ["a", "a"])


def test_a_source_result_checks_its_status_and_images():
    result = base.SourceResult("train/1", _images(2))
    assert (result.status, result.cost_usd, tuple(result.seeds)) == ("ok", 0.0, ())
    assert base.SourceResult("train/1", torch.zeros(0, 1, 128, 128, dtype=torch.uint8), status="refused")
    with pytest.raises(ValueError, match=r"status 'paid' is not one of \('ok', 'refused', 'error', 'missing'\)"):
        base.SourceResult("train/1", _images(1), status="paid")
    with pytest.raises(ValueError, match="SourceResult.images must be uint8"):
        base.SourceResult("train/1", _images(1).float())


def test_png_storage_is_lossless_and_other_images_are_converted():
    image = _images(1)[0]
    data = base.to_png(image)
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and torch.equal(base.from_image_bytes(data), image)
    small = base.to_png(image, size=64)
    with Image.open(io.BytesIO(small)) as pil:
        assert pil.size == (64, 64) and pil.mode == "L"
    up = base.from_image_bytes(small)  # back to the study's size
    assert up.shape == (1, 128, 128) and up.dtype == torch.uint8
    rgb = np.zeros((256, 256, 3), dtype=np.uint8)
    rgb[..., 1] = 255  # pure green: luma 0.587 * 255 = 150 (PIL's L = R*299/1000 + G*587/1000 + B*114/1000)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=100)
    decoded = base.from_image_bytes(buf.getvalue())
    assert decoded.shape == (1, 128, 128) and abs(int(decoded.float().mean().round()) - 150) <= 1
    assert isinstance(base.Generator, type) and not isinstance(object(), base.Generator)


def test_a_fill_summary_says_what_was_done_or_would_be():
    dry = base.FillSummary("openai-abc", requested=10, already_done=4, pending=6, calls_planned=6,
                           estimated_cost_usd=0.06, dry_run=True)
    assert str(dry) == ("openai-abc: 10 images requested, 4 already in the bank; would send 6 calls for 6 images, "
                        "estimated $0.0600")
    done = base.FillSummary("openai-abc", 10, 4, 6, 6, 0.06, made=5, refused=1, calls_sent=6, cost_usd=0.05,
                            total_cost_usd=0.09, interrupted=2, stopped_by_budget=True)
    assert str(done) == ("openai-abc: 10 images requested, 4 already in the bank; sent 6 calls for 6 images, "
                         "estimated $0.0600; made 5, refused 1, spent ~$0.0500 (~$0.0900 in total for this generator); "
                         "2 images of interrupted calls (possibly paid) left as they were; STOPPED before exceeding "
                         "the budget (raise budget_usd to go on)")
