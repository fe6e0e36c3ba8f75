"""Every source kind on real images (hub layout, image folders, the bundled sample), their fingerprints and every bad
input."""

import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mri_synth.data import cache, sampling, sources, types

THESIS_TRAIN = [724, 49, 2566, 1781]

THESIS_TEST = [172, 15, 634, 459]


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MRI_SYNTH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_hub_folder_matches_the_thesis_counts(real_data):
    assert real_data.train.images.shape == (5120, 1, 128, 128)
    assert real_data.train.images.dtype == torch.uint8
    assert real_data.train.labels.dtype == torch.int64
    assert real_data.train.class_counts() == THESIS_TRAIN
    assert real_data.test.class_counts() == THESIS_TEST
    assert len(set(real_data.train.ids)) == 5120 and real_data.train.ids[42] == "train/00042"
    # not a blank decode: real slices have dark background and bright tissue
    assert real_data.train.images.float().std() > 20


@pytest.mark.filterwarnings("ignore::mri_synth.data.subjects.SubjectsWarning")  # scattered slices are not whole people
def test_image_folder_written_from_real_images_loads_identically(real_data, tmp_path, tmp_cache):
    idx = sampling.stratified_sample(real_data.train.labels, 0.02, seed=1)
    part = real_data.train.subset(idx)
    root = tmp_path / "kaggle"
    sources.export_image_folder(part, root / "train")
    sources.export_image_folder(real_data.test.subset(torch.arange(40)), root / "test")
    loaded = cache.load_data(root)
    assert loaded.train.class_counts() == part.class_counts()
    # PNG is lossless: the same pixels come back, in the order of the (sorted) files
    order = {i: n for n, i in enumerate(loaded.train.ids)}
    for k in range(len(part)):
        stem = part.ids[k].replace("/", "_")
        j = order[f"train/{types.CLASS_NAMES[part.labels[k]]}/{stem}.png"]
        assert torch.equal(loaded.train.images[j], part.images[k])
        assert loaded.train.labels[j] == part.labels[k]


@pytest.mark.filterwarnings("ignore::mri_synth.data.subjects.SubjectsWarning")  # scattered slices are not whole people
def test_image_folder_without_split_levels_and_spelling_variants(real_data, tmp_path, tmp_cache):
    part = real_data.train.subset(sampling.stratified_sample(real_data.train.labels, 0.03, seed=0))
    sources.export_image_folder(part, tmp_path / "flat", suffix=".jpg")
    for old, new in [("Non_Demented", "NonDemented"), ("Very_Mild_Demented", "Very Mild Demented")]:
        (tmp_path / "flat" / old).rename(tmp_path / "flat" / new)
    loaded = cache.load_data(tmp_path / "flat")
    counts = [a + b for a, b in zip(loaded.train.class_counts(), loaded.test.class_counts())]
    assert counts == part.class_counts()
    # the held-out share is the documented 20% of each class, and never overlaps the train split
    assert not set(loaded.train.ids) & set(loaded.test.ids)
    assert loaded.test.class_counts() == [max(1, int(c * sources.HOLDOUT_FRACTION + 0.5)) for c in part.class_counts()]


SAMPLE_TRAIN = [47, 49, 75, 52]  # 9 whole people (Mild 2, Moderate 2, Non 3, Very mild 2); slices keep their split

SAMPLE_TEST = [17, 15, 21, 12]


def test_bundled_sample(sample_data):
    assert sample_data.train.class_counts() == SAMPLE_TRAIN
    assert sample_data.test.class_counts() == SAMPLE_TEST
    assert sample_data.train.images.shape[1:] == (1, 128, 128)


def test_sample_images_are_the_real_rows_they_are_named_after(sample_data, real_data):
    for image, image_id in list(zip(sample_data.train.images, sample_data.train.ids))[:20]:
        row = int(image_id.rsplit("_", 1)[1].split(".")[0])
        assert torch.equal(image, real_data.train.images[row])


def test_env_var_redirects_the_default_source(monkeypatch, real_data_path):
    monkeypatch.setenv("MRI_SYNTH_DATA", "sample")
    assert cache.load_data().train.class_counts() == SAMPLE_TRAIN
    monkeypatch.setenv("MRI_SYNTH_DATA", str(real_data_path))
    assert len(cache.load_data().train) == 5120


def test_cache_key_changes_when_the_source_changes(real_data, tmp_path, tmp_cache):
    root = tmp_path / "imgs"
    sources.export_image_folder(real_data.train.subset(sampling.stratified_sample(real_data.train.labels, 0.01, 0)),
                                root)
    before = sources.source_fingerprint(root)
    extra = real_data.train.subset([0])
    sources.export_image_folder(extra, root)  # one more image in an existing class
    assert sources.source_fingerprint(root) != before


def test_fingerprint_follows_content_not_file_times(real_data_path, tmp_path):
    # a re-synced share or another machine's copy has new file times: its results folders must stay valid
    copy = tmp_path / "copy"
    shutil.copytree(real_data_path, copy)
    for f in copy.rglob("*.parquet"):
        os.utime(f, (1_000_000_000, 1_000_000_000))
    assert sources.source_fingerprint(copy) == sources.source_fingerprint(real_data_path)
    shard = sorted(copy.rglob("test-*.parquet"))[0]
    shard.write_bytes(shard.read_bytes()[:-1] + b"\0")  # same size, one byte changed
    assert sources.source_fingerprint(copy) != sources.source_fingerprint(real_data_path)


def test_hub_folder_without_datasets_reads_the_same_rows(real_data, real_data_path, tmp_cache, monkeypatch):
    # the GPU machines have pyarrow but not datasets: the local hub-layout folder must read identically
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets now raises ImportError
    conv = sources.Converter()
    train, test = sources.load_hub(Path(real_data_path), conv)
    assert train.ids == real_data.train.ids and test.ids == real_data.test.ids
    assert torch.equal(train.labels, real_data.train.labels) and torch.equal(test.labels, real_data.test.labels)
    assert torch.equal(train.images, real_data.train.images) and torch.equal(test.images, real_data.test.images)
    with pytest.raises(types.DataSourceError, match="needs the datasets package"):
        sources.load_hub("Falah/Alzheimer_MRI", conv)


def test_missing_path(tmp_path):
    with pytest.raises(types.DataSourceError, match="does not exist.*MRI_SYNTH_DATA"):
        cache.load_data(tmp_path / "nowhere")


def _folder(tmp_path, classes):
    rng = np.random.default_rng(0)
    for name in classes:
        (tmp_path / name).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (128, 128), dtype=np.uint8)).save(tmp_path / name / "a.png")
    return tmp_path


def test_a_download_wrapper_folder_is_looked_through_with_a_message(tmp_path, tmp_cache):
    # Kaggle's zip unpacks as "Alzheimer_s Dataset/{train,test}/<class>/"; a README may lie beside the wrapper
    download = tmp_path / "download"
    wrapper = download / "Alzheimer_s Dataset"
    for split in ("train", "test"):
        _folder(wrapper / split, types.CLASS_NAMES)
    (download / "README.txt").write_text("from kaggle")
    (download / "__MACOSX" / "Alzheimer_s Dataset").mkdir(parents=True)  # what a zip made on a Mac adds
    with pytest.warns(UserWarning, match="holds only the folder 'Alzheimer_s Dataset'.*reading the dataset from"):
        loaded = cache.load_data(download)
    assert loaded.source == str(wrapper.resolve())
    assert loaded.train.class_counts() == [1, 1, 1, 1] and loaded.test.ids[0] == "test/Mild_Demented/a.png"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the dataset's own folder needs no looking through
        assert cache.load_data(wrapper, subjects=False).fingerprint == loaded.fingerprint


def test_a_folder_with_images_or_a_single_class_is_no_wrapper(tmp_path):
    one_class = _folder(tmp_path / "one", ["Non_Demented"])
    with pytest.raises(types.DataSourceError, match="no folder for Mild_Demented"):
        cache.load_data(one_class, cache=False)
    beside = _folder(tmp_path / "beside" / "inner", types.CLASS_NAMES).parent
    Image.fromarray(np.zeros((128, 128), dtype=np.uint8)).save(beside / "stray.png")
    with pytest.raises(types.DataSourceError, match="unknown class folder 'inner'"):
        cache.load_data(beside, cache=False)


def test_unknown_class_folder_lists_the_expected_names(tmp_path):
    root = _folder(tmp_path / "x", list(types.CLASS_NAMES) + ["Severe_Demented"])
    with pytest.raises(types.DataSourceError, match="Severe_Demented.*Mild_Demented, Moderate_Demented"):
        cache.load_data(root, cache=False)


def test_class_folder_without_images(tmp_path):
    root = _folder(tmp_path / "x", types.CLASS_NAMES)
    (root / "Moderate_Demented" / "a.png").unlink()
    with pytest.raises(types.DataSourceError, match="Moderate_Demented has no images"):
        cache.load_data(root, cache=False)


def test_corrupt_image_is_named(tmp_path):
    root = _folder(tmp_path / "x", types.CLASS_NAMES)
    (root / "Non_Demented" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    with pytest.raises(types.DataSourceError, match=r"broken\.jpg.*replace or remove"):
        cache.load_data(root, cache=False)


def test_rgb_and_other_sizes_are_converted_and_reported_once(tmp_path):
    root = _folder(tmp_path / "x", types.CLASS_NAMES)
    rgb = np.zeros((256, 200, 3), dtype=np.uint8)
    rgb[..., 0] = 255  # pure red: luma 0.299 * 255 = 76
    for k in range(3):
        Image.fromarray(rgb).save(root / "Mild_Demented" / f"rgb{k}.png")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = cache.load_data(root, cache=False)
    messages = [str(w.message) for w in caught if "converted" in str(w.message)]
    assert len(messages) == 1
    assert "3 image(s) to grayscale" in messages[0] and "3 image(s) resized from 200x256" in messages[0]
    all_images = torch.cat([loaded.train.images, loaded.test.images])
    assert all_images.shape[1:] == (1, 128, 128)
    assert (all_images == 76).flatten(1).all(1).sum() == 3


def test_hub_unreachable_with_nothing_cached_says_how_to_use_a_local_copy(tmp_path):
    # a fresh process, so the hub libraries read the offline switch at import time
    code = (
        "from mri_synth.data.cache import load_data\nfrom mri_synth.data.types import DataSourceError\n"
        "try:\n    load_data('Falah/Alzheimer_MRI', cache=False)\n"
        "except DataSourceError as e:\n    print('ERR', e)\n"
    )
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "MRI_SYNTH_CACHE": str(tmp_path / "c")}
    import os

    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True,
                         timeout=120)
    assert "ERR" in out.stdout, out.stderr[-2000:]
    assert "MRI_SYNTH_DATA" in out.stdout and "sample" in out.stdout
