"""The decoded-split cache: a second load reads it, an unreadable one is rebuilt, people can be skipped."""

import warnings

import pytest
import torch

from mri_synth.data import cache


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MRI_SYNTH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_load_data_can_skip_the_people(tmp_cache):
    data = cache.load_data("sample", subjects=False)
    assert data.train.groups is None and data.subjects is None


def test_second_load_comes_from_the_cache(tmp_cache, monkeypatch):
    first = cache.load_data("sample")
    files = list((tmp_cache / "data").glob("*.pt"))
    assert len(files) == 1 and first.fingerprint in files[0].name

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(cache, "load_image_folder", no_decoding)
    second = cache.load_data("sample")
    assert torch.equal(first.train.images, second.train.images) and first.test.ids == second.test.ids


@pytest.mark.parametrize("damage", ["truncated", "not a torch file"])
def test_an_unreadable_cache_is_rebuilt_with_a_warning_naming_it(tmp_cache, damage):
    first = cache.load_data("sample")
    [cache_file] = (tmp_cache / "data").glob("*.pt")
    whole = cache_file.read_bytes()
    cache_file.write_bytes(whole[: len(whole) // 2] if damage == "truncated" else b"garbage")
    with pytest.warns(UserWarning, match=f"data cache {cache_file}.*cannot be read.*rebuilding"):
        second = cache.load_data("sample")
    assert torch.equal(first.train.images, second.train.images) and first.train.ids == second.train.ids
    assert cache_file.read_bytes() == whole  # rebuilt: the next load reads it without a word
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cache.load_data("sample").test.ids == first.test.ids
