"""The data layer: load the train and test splits once, as tensors, from any source the study meets.

Sources (``load_data(source)``):

- ``"sample"``: the bundled stratified sample under ``data/sample`` (works with no network);
- a hub id such as ``"Falah/Alzheimer_MRI"``, through Hugging Face ``datasets`` (cached by it);
- a local folder in the hub's layout (``data/train-*.parquet``, ``data/test-*.parquet``, a README card), such as
  the offline mirror ``../shared/data/alzheimer_mri``;
- an image folder with one sub-folder per class (the Kaggle release's layout), with or without ``train/`` and
  ``test/`` levels; spelling variants of the class names (``NonDemented``, ``Non Demented``) are accepted. A
  folder that holds nothing but one wrapper folder (a download's ``Alzheimer_s Dataset/``) is looked through,
  with a warning that says so.

Every split is decoded once into ``uint8[N,1,128,128]`` images, ``int64[N]`` labels (the hub's class ids) and a
stable string id per image, then cached on disk keyed by a fingerprint of the source, so nothing downstream decodes
an image again. ``load_data`` then fills ``Split.groups``, each slice's person as ``subjects`` recovers it from the
pixels (the sources carry no subject ids; cached too). The cache holds tensors only and is read with
``torch.load(weights_only=True)``; a cache file that cannot be read (truncated by a full disk, say) is rebuilt from
the source with a warning naming it. Stratified sampling (``stratified_sample``) is deterministic and nested across fractions.

What this module leaves to others: augmentation (``augment``), model-specific resizing and normalisation
(``models``), and which subset a trial uses (``study``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.io import ImageReadMode, decode_image

from . import paths
from .constants import CLASS_NAMES, IMAGE_SIZE, NUM_CLASSES  # also imported from here by callers and notebooks

if TYPE_CHECKING:
    from .subjects import Subjects

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
HOLDOUT_FRACTION = 0.2
"""Share of each class held out as the test split when an image folder has no train/test levels."""
_DECODE_VERSION = 2  # bump when decoding changes, so old caches are not reused


class DataSourceError(ValueError):
    """A data source cannot be read; the message says what is wrong and how to fix it."""


def _class_key(name: str) -> str:
    return re.sub(r"[^a-z]", "", name.lower())


_CLASS_BY_KEY = {_class_key(n): i for i, n in enumerate(CLASS_NAMES)}


def class_id(folder_name: str) -> int:
    """Map a class folder name (any spelling variant of the hub's names) to the hub's class id."""
    key = _class_key(folder_name)
    if key not in _CLASS_BY_KEY:
        raise DataSourceError(
            f"unknown class folder {folder_name!r}: expected one of {', '.join(CLASS_NAMES)} "
            "(spelling variants such as 'NonDemented' or 'Non Demented' are accepted); rename or remove the folder"
        )
    return _CLASS_BY_KEY[key]


@dataclass(frozen=True, eq=False)
class Split:
    """One decoded split: images, labels, a stable id and (when known) a person id per image, all index-aligned.

    ``groups`` holds each slice's person as recovered from the pixels (``subjects``), the same id in both splits of
    a source; ``None`` where nobody recovered them (a split built by hand).
    """

    images: torch.Tensor  # uint8 [N, 1, H, W]
    labels: torch.Tensor  # int64 [N]
    ids: tuple[str, ...]
    groups: torch.Tensor | None = None  # int64 [N]: person id per slice

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1] != 1:
            raise ValueError(f"images must be uint8 [N,1,H,W], got {self.images.dtype} {tuple(self.images.shape)}")
        if not (len(self.images) == len(self.labels) == len(self.ids)):
            raise ValueError(
                f"images, labels and ids differ in length: {len(self.images)}, {len(self.labels)}, {len(self.ids)}"
            )
        if self.groups is not None and (self.groups.dtype != torch.int64 or self.groups.shape != self.labels.shape):
            raise ValueError(
                f"groups must be int64 [N] with N = {len(self.labels)} (one person id per image), "
                f"got {self.groups.dtype} {tuple(self.groups.shape)}"
            )

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, index: torch.Tensor | Sequence[int]) -> "Split":
        """The images at ``index`` (in that order)."""
        index = torch.as_tensor(index, dtype=torch.long)
        groups = None if self.groups is None else self.groups[index]
        return Split(self.images[index], self.labels[index], tuple(self.ids[i] for i in index.tolist()), groups)

    def class_counts(self) -> list[int]:
        """Number of images of each class, in class-id order."""
        return torch.bincount(self.labels, minlength=NUM_CLASSES).tolist()


@dataclass(frozen=True, eq=False)
class MRIData:
    """The train and test splits of one source, with the source's description, fingerprint and recovered people."""

    train: Split
    test: Split
    source: str
    fingerprint: str
    subjects: "Subjects | None" = None  # subjects.Subjects: the people found in the pixels, with a report


# ----------------------------------------------------------------------------------------------------- sources


def _is_hub_layout(path: Path) -> bool:
    return any(path.glob("data/*.parquet")) or any(path.glob("*.parquet"))


def _is_class_folder(name: str) -> bool:
    return _class_key(name) in _CLASS_BY_KEY


def _look_through_wrappers(path: Path) -> Path:
    """The folder inside ``path`` when ``path`` holds only that folder (no images of its own), repeatedly.

    A download often unpacks into one wrapper folder (Kaggle: ``Alzheimer_s Dataset/{train,test}/<class>/``);
    a split or class folder is never a wrapper. Files that are not images (a README, the zip) may sit beside it, and
    so may the ``__MACOSX`` folder of a zip made on a Mac.
    """
    while not _is_hub_layout(path):
        entries = [p for p in path.iterdir() if not p.name.startswith(".") and p.name != "__MACOSX"]
        folders = [p for p in entries if p.is_dir()]
        has_images = any(p.suffix.lower() in IMAGE_SUFFIXES for p in entries if p.is_file())
        if len(folders) != 1 or has_images or folders[0].name.lower() in ("train", "test") \
                or _is_class_folder(folders[0].name):
            return path
        warnings.warn(f"{path} holds only the folder {folders[0].name!r} and no images of its own: reading the "
                      f"dataset from {folders[0]}", stacklevel=4)
        path = folders[0]
    return path


def _resolve(source: str | os.PathLike | None) -> tuple[str, str | Path]:
    """Return (kind, location) with kind in {"hub", "hub_folder", "image_folder"}."""
    source = paths.default_source() if source is None or str(source) == "" else source
    if str(source) == "sample":
        if not paths.SAMPLE_DIR.is_dir():
            raise DataSourceError(f"the bundled sample is missing at {paths.SAMPLE_DIR}: restore it with git checkout")
        return "image_folder", paths.SAMPLE_DIR
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise DataSourceError(f"data source {str(path)!r} is a file: name the dataset's folder instead")
        path = _look_through_wrappers(path.resolve())
        return ("hub_folder" if _is_hub_layout(path) else "image_folder"), path
    text = str(source)
    looks_like_hub_id = re.fullmatch(r"[\w.-]+/[\w.-]+", text) is not None and not text.startswith(".")
    if looks_like_hub_id:
        return "hub", text
    raise DataSourceError(
        f"data source {text!r} does not exist: pass an existing folder (the hub layout or one sub-folder per class), "
        f"a hub id such as {paths.HUB_DATASET_ID!r}, or 'sample'; MRI_SYNTH_DATA sets the default"
    )


def _hash_files(files: Sequence[Path], root: Path, content: bool) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.relative_to(root)).encode())
        if content:
            h.update(hashlib.sha256(f.read_bytes()).digest())
        else:
            st = f.stat()
            h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _image_files(root: Path) -> dict[str, list[tuple[Path, int]]]:
    """Files of an image folder by split: {"train": [(file, label)], "test": [...]}, or {"all": [...]}."""
    subdirs = {p.name.lower(): p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}
    split_dirs = {s: subdirs[s] for s in ("train", "test") if s in subdirs}
    if split_dirs and set(split_dirs) != {"train", "test"}:
        raise DataSourceError(f"{root} has a {next(iter(split_dirs))}/ folder but not its partner: add both train/ and test/")
    groups = split_dirs or {"all": root}
    out: dict[str, list[tuple[Path, int]]] = {}
    for split, split_root in groups.items():
        class_dirs = [p for p in sorted(split_root.iterdir()) if p.is_dir() and not p.name.startswith(".")]
        if not class_dirs:
            raise DataSourceError(
                f"{split_root} has no class folders: expected one sub-folder per class ({', '.join(CLASS_NAMES)})"
            )
        files: list[tuple[Path, int]] = []
        seen: set[int] = set()
        for d in class_dirs:
            label = class_id(d.name)
            imgs = sorted(f for f in d.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
            if not imgs:
                raise DataSourceError(
                    f"class folder {d} has no images ({', '.join(IMAGE_SUFFIXES)}): add its images or remove the folder"
                )
            seen.add(label)
            files += [(f, label) for f in imgs]
        missing = [CLASS_NAMES[c] for c in range(NUM_CLASSES) if c not in seen]
        if missing and split != "test":
            raise DataSourceError(f"{split_root} has no folder for {', '.join(missing)}: every class needs training images")
        out[split] = files
    return out


class _Converter:
    """Decode bytes to uint8 [1,128,128] grayscale; count conversions so they are reported once per load."""

    def __init__(self) -> None:
        self.converted: Counter[str] = Counter()

    def __call__(self, data: bytes, name: str) -> torch.Tensor:
        try:
            raw = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.UNCHANGED)
        except Exception as err:  # torchvision raises RuntimeError with varying texts
            raise DataSourceError(f"cannot decode image {name}: {err}; replace or remove the file") from err
        if raw.shape[0] != 1:
            self.converted["to grayscale"] += 1
            rgb = raw[:3].float() if raw.shape[0] >= 3 else raw[:1].float().expand(3, -1, -1)
            # ITU-R 601 luma, the same weights as PIL's convert("L")
            raw = (rgb[0] * 0.299 + rgb[1] * 0.587 + rgb[2] * 0.114).round().clamp(0, 255).to(torch.uint8)[None]
        if raw.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
            self.converted[f"resized from {raw.shape[2]}x{raw.shape[1]}"] += 1
            raw = F.interpolate(raw[None].float(), size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", antialias=True)
            raw = raw[0].round().clamp(0, 255).to(torch.uint8)
        return raw

    def report(self, source: str) -> None:
        if self.converted:
            what = ", ".join(f"{n} image(s) {k}" for k, n in sorted(self.converted.items()))
            warnings.warn(f"{source}: converted to 1x{IMAGE_SIZE}x{IMAGE_SIZE} grayscale: {what}", stacklevel=3)


def _decode_files(items: list[tuple[Path, int]], root: Path, conv: _Converter) -> Split:
    images = [conv(f.read_bytes(), str(f)) for f, _ in items]
    return Split(
        torch.stack(images),
        torch.tensor([label for _, label in items], dtype=torch.long),
        tuple(f.relative_to(root).as_posix() for f, _ in items),
    )


def _load_image_folder(root: Path, conv: _Converter) -> tuple[Split, Split]:
    groups = _image_files(root)
    if "all" not in groups:
        return _decode_files(groups["train"], root, conv), _decode_files(groups["test"], root, conv)
    everything = _decode_files(groups["all"], root, conv)
    # no split levels: hold out a fixed stratified share as the test split (seed 0, so it never moves)
    test_idx = stratified_sample(everything.labels, HOLDOUT_FRACTION, seed=0)
    mask = torch.ones(len(everything), dtype=torch.bool)
    mask[test_idx] = False
    return everything.subset(mask.nonzero().flatten()), everything.subset(test_idx)


def _parquet_files(root: Path, split: str) -> list[Path]:
    """The parquet shards of ``split`` in a hub-layout folder (``data/train-00000-of-00001.parquet`` and the like)."""
    return sorted(f for f in [*root.glob("data/*.parquet"), *root.glob("*.parquet")]
                  if f.name.split("-")[0].split(".")[0].lower() == split)


def _load_hub_folder_pyarrow(root: Path, conv: _Converter) -> tuple[Split, Split]:
    """A local hub-layout folder read with pyarrow alone, for machines without ``datasets`` (the GPU machines).

    Same rows, order, ids (``train/00000``) and labels as ``datasets.load_dataset``: the shards are read in name
    order, and the class names come from the ``huggingface`` schema metadata that ``datasets`` wrote.
    """
    import pyarrow.parquet as pq

    splits = []
    for name in ("train", "test"):
        files = _parquet_files(root, name)
        if not files:
            raise DataSourceError(f"{root} has no {name} parquet shard (data/{name}-*.parquet): it needs both train "
                                  "and test")
        images, labels = [], []
        for f in files:
            table = pq.read_table(f)
            meta = json.loads((table.schema.metadata or {}).get(b"huggingface", b"{}"))
            names = meta.get("info", {}).get("features", {}).get("label", {}).get("names")
            remap = [class_id(n) for n in names] if names else list(range(NUM_CLASSES))
            for item, label in zip(table.column("image").to_pylist(), table.column("label").to_pylist()):
                row = len(images)
                data = item["bytes"] or (root / item["path"]).read_bytes()
                images.append(conv(data, f"{name} row {row}"))
                labels.append(remap[label])
        splits.append(Split(torch.stack(images), torch.tensor(labels), tuple(f"{name}/{i:05d}" for i in range(len(images)))))
    return splits[0], splits[1]


def _load_hub(location: str | Path, conv: _Converter) -> tuple[Split, Split]:
    try:
        import datasets  # imported here: it is slow to import and only these sources need it
    except ImportError:
        if isinstance(location, Path):  # a local folder needs no datasets: pyarrow reads its shards
            return _load_hub_folder_pyarrow(location, conv)
        raise DataSourceError(f"reading {location!r} from the Hugging Face hub needs the datasets package: "
                              "pip install datasets, or point MRI_SYNTH_DATA at a local copy") from None

    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # "Generating train split" bars on stderr: noise in notebooks (and nbval's diffs)
    try:
        dsd = datasets.load_dataset(str(location), cache_dir=str(paths.cache_dir() / "hf"))
    except Exception as err:
        if isinstance(location, Path):
            raise DataSourceError(f"cannot read the hub-layout folder {location}: {err}") from err
        raise DataSourceError(
            f"cannot load {location!r} from the Hugging Face hub ({type(err).__name__}: {err}). Offline with nothing "
            "cached? Point the study at a local copy: MRI_SYNTH_DATA=<folder in the hub's layout or an image folder "
            "with one sub-folder per class>, or use data_source='sample' (the bundled sample)"
        ) from err
    finally:
        if bars:
            datasets.enable_progress_bars()
    missing = {"train", "test"} - set(dsd)
    if missing:
        raise DataSourceError(f"{location} has no {', '.join(sorted(missing))} split: it needs both train and test")
    splits = []
    for name in ("train", "test"):
        ds = dsd[name].cast_column("image", datasets.Image(decode=False))
        names = ds.features["label"].names if hasattr(ds.features["label"], "names") else None
        remap = [class_id(n) for n in names] if names else list(range(NUM_CLASSES))
        images, labels = [], []
        for row, item in enumerate(ds):
            images.append(conv(item["image"]["bytes"] or Path(item["image"]["path"]).read_bytes(), f"{name} row {row}"))
            labels.append(remap[item["label"]])
        splits.append(Split(torch.stack(images), torch.tensor(labels), tuple(f"{name}/{i:05d}" for i in range(len(ds)))))
    return splits[0], splits[1]


def source_fingerprint(source: str | os.PathLike | None = None) -> str:
    """A short hash that changes whenever the source's images change (the cache key)."""
    return _fingerprint(*_resolve(source))


def _fingerprint(kind: str, location: str | Path) -> str:
    if kind == "hub":
        return hashlib.sha256(f"hub:{location}".encode()).hexdigest()[:16]
    root = Path(location)
    # content, not size and mtime: a copy of the same files (another machine, a fresh checkout, a re-synced share)
    # has the same fingerprint, so its results folders and caches stay valid; ~0.1 s for the 28 MB dataset
    if kind == "hub_folder":
        return _hash_files(sorted(root.rglob("*.parquet")), root, content=True)
    files = sorted(f for f in root.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
    return _hash_files(files, root, content=True)


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
    kind, location = _resolve(source)
    fingerprint = _fingerprint(kind, location)
    description = str(location)
    cache_file = paths.cache_dir() / "data" / f"{kind}-{fingerprint}-v{_DECODE_VERSION}.pt"
    if cache and cache_file.is_file():
        splits = _read_cache(cache_file)
        if splits is not None:
            return _people(MRIData(splits[0], splits[1], description, fingerprint), subjects, cache)
    conv = _Converter()
    train, test = _load_image_folder(Path(location), conv) if kind == "image_folder" else _load_hub(location, conv)
    conv.report(description)
    if cache:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        blob = {f"{s}_{k}": getattr(sp, k) for s, sp in (("train", train), ("test", test)) for k in ("images", "labels")}
        blob["ids"] = "\n".join(train.ids) + "\t" + "\n".join(test.ids)
        tmp = cache_file.with_suffix(f".tmp{os.getpid()}")
        torch.save(blob, tmp)
        tmp.replace(cache_file)  # atomic: a killed load never leaves half a cache file
    return _people(MRIData(train, test, description, fingerprint), subjects, cache)


def _people(data: MRIData, recover: bool, cache: bool) -> MRIData:
    if not recover:
        return data
    from .subjects import with_subjects  # subjects builds on this module

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


def check_fraction(fraction: float, name: str = "fraction") -> float:
    """Validate a share of a set in (0, 1]."""
    if not isinstance(fraction, (int, float)) or isinstance(fraction, bool) or not 0 < fraction <= 1:
        raise ValueError(f"{name} must be a number in (0, 1], got {fraction!r}: e.g. 0.3 for 30% of the images")
    return float(fraction)


def stratified_sample(labels: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Indices of a stratified sample: per-class proportional, at least one image per present class.

    For one seed the samples are nested: the 30% sample is contained in the 40% sample, because each class's
    sample is a prefix of one seeded permutation of that class.

    Args:
        labels: int64 [N] class ids.
        fraction: share of each class to keep, in (0, 1].
        seed: the sample's seed; the same seed gives the same indices.

    Returns:
        Sorted int64 indices into ``labels``.
    """
    fraction = check_fraction(fraction)
    labels_np = np.asarray(torch.as_tensor(labels).cpu())
    chosen = []
    for c in np.unique(labels_np):
        members = np.flatnonzero(labels_np == c)
        order = np.random.default_rng([seed, int(c)]).permutation(len(members))
        keep = min(len(members), max(1, math.floor(fraction * len(members) + 0.5)))
        chosen.append(members[order[:keep]])
    return torch.from_numpy(np.sort(np.concatenate(chosen))).long()


# ---------------------------------------------------------------------------------------------------- export


def export_image_folder(split: Split, root: str | os.PathLike, *, suffix: str = ".png") -> list[Path]:
    """Write a split as an image folder (one sub-folder per class, lossless PNG by default)."""
    from torchvision.io import encode_png, write_file

    root = Path(root)
    written = []
    for image, label, image_id in zip(split.images, split.labels.tolist(), split.ids):
        stem = re.sub(r"[^\w.-]", "_", image_id.rsplit(".", 1)[0])
        path = root / CLASS_NAMES[label] / f"{stem}{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".png":
            write_file(str(path), encode_png(image))
        else:
            from torchvision.io import encode_jpeg

            write_file(str(path), encode_jpeg(image, quality=95))
        written.append(path)
    return written
