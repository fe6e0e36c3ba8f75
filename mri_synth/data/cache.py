"""The decode cache: a source's splits decoded once, kept on disk keyed by the source's fingerprint.

``load_data`` is the data layer's front door: it resolves a source (:mod:`mri_synth.data.sources`), reads its
decoded splits from the cache or decodes and caches them, and fills ``Split.groups`` with each slice's person as
:mod:`mri_synth.data.subjects` recovers it from the pixels (the sources carry no subject ids; cached too). The cache
holds tensors only and is read with ``torch.load(weights_only=True)``; a cache file that cannot be read (truncated by
a full disk, say) is rebuilt from the source with a warning naming it.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from mri_synth import paths
from mri_synth.data.sources import Converter, fingerprint, load_hub, load_image_folder, resolve
from mri_synth.data.subjects import with_subjects
from mri_synth.data.types import MRIData, Split

_DECODE_VERSION = 2  # bump when decoding changes, so old caches are not reused


def load_data(source: str | os.PathLike | None = None, *, cache: bool = True, subjects: bool = True) -> MRIData:
    """Load the train and test splits of a source, from the on-disk cache when it has them.

    Args:
        source: ``"sample"``, a hub id, a local hub-layout folder or an image folder; ``None`` or ``""``
            means ``$MRI_SYNTH_DATA`` or else the hub dataset ``Falah/Alzheimer_MRI``.
        cache: read and write the decoded-split cache (``paths.cache_dir()/data``) and the people cache.
        subjects: recover each slice's person from the pixels (``subjects.with_subjects``; cached) and fill
            ``Split.groups``; warns when the groups found are not clean people.

    Returns:
        The decoded splits with the source's description, fingerprint and (with ``subjects``) people.

    Raises:
        DataSourceError: the source is missing, unreachable, or holds unreadable images or unknown classes.
    """
    kind, location = resolve(source)
    digest = fingerprint(kind, location)
    description = str(location)
    cache_file = paths.cache_dir() / "data" / f"{kind}-{digest}-v{_DECODE_VERSION}.pt"
    if cache and cache_file.is_file():
        splits = _read_cache(cache_file)
        if splits is not None:
            return _people(MRIData(splits[0], splits[1], description, digest), subjects, cache)
    conv = Converter()
    train, test = load_image_folder(Path(location), conv) if kind == "image_folder" else load_hub(location, conv)
    conv.report(description)
    if cache:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        blob = {f"{s}_{k}": getattr(sp, k) for s, sp in (("train", train), ("test", test))
                for k in ("images", "labels")}
        blob["ids"] = "\n".join(train.ids) + "\t" + "\n".join(test.ids)
        tmp = cache_file.with_suffix(f".tmp{os.getpid()}")
        torch.save(blob, tmp)
        tmp.replace(cache_file)  # atomic: a killed load never leaves half a cache file
    return _people(MRIData(train, test, description, digest), subjects, cache)


def _people(data: MRIData, recover: bool, cache: bool) -> MRIData:
    if not recover:
        return data
    return with_subjects(data, cache=cache)


def _read_cache(cache_file: Path) -> tuple[Split, Split] | None:
    """The splits in a cache file, or ``None`` (with a warning naming the file) when it cannot be read."""
    try:
        blob = torch.load(cache_file, weights_only=True)  # tensors and strings only: never runs code from the file
        ids = [part.split("\n") if part else [] for part in blob["ids"].split("\t")]  # one string: fast to unpickle
        train, test = (Split(blob[f"{s}_images"], blob[f"{s}_labels"], tuple(i))
                       for s, i in zip(("train", "test"), ids))
    except Exception as err:  # a truncated zip, a foreign pickle, missing keys: all mean "decode again"
        first = (str(err).splitlines() or [""])[0].split(". ")[0]  # torch's texts run on (and suggest unsafe loads)
        warnings.warn(f"the data cache {cache_file} cannot be read ({type(err).__name__}: {first}); rebuilding it "
                      "from the source", stacklevel=3)
        return None
    return train, test


# ---------------------------------------------------------------------------------------------------- sampling
