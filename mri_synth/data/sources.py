"""Where the images come from: the bundled sample, a hub id, a hub-layout folder, Kaggle-style image folders.

``resolve`` names a source's kind and location; ``fingerprint`` hashes its content (the cache key); ``decode_source``
decodes its train and test splits into ``Split``s (uint8 ``[N,1,128,128]`` grayscale, the hub's class ids, a stable
id per image); ``export_image_folder`` writes a split back as an image folder. Sources:

- ``"sample"``: the bundled stratified sample under ``data/sample`` (works with no network);
- a hub id such as ``"Falah/Alzheimer_MRI"``, through Hugging Face ``datasets`` (cached by it);
- a local folder in the hub's layout (``data/train-*.parquet``, ``data/test-*.parquet``, a README card), such as
  the offline mirror ``../shared/data/alzheimer_mri``; read with pyarrow alone where ``datasets`` is missing;
- an image folder with one sub-folder per class (the Kaggle release's layout), with or without ``train/`` and
  ``test/`` levels; spelling variants of the class names (``NonDemented``, ``Non Demented``) are accepted. A
  folder that holds nothing but one wrapper folder (a download's ``Alzheimer_s Dataset/``) is looked through,
  with a warning that says so.

Caching the decoded splits and recovering people is :mod:`mri_synth.data.cache`'s.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
import torch.nn.functional as F
from torchvision.io import ImageReadMode, decode_image

from mri_synth import paths
from mri_synth.data.sampling import stratified_sample
from mri_synth.data.types import CLASS_NAMES, IMAGE_SIZE, NUM_CLASSES, DataSourceError, Split, class_id, is_class_folder

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
HOLDOUT_FRACTION = 0.2
"""Share of each class held out as the test split when an image folder has no train/test levels."""


def _is_hub_layout(path: Path) -> bool:
    return any(path.glob("data/*.parquet")) or any(path.glob("*.parquet"))


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
                or is_class_folder(folders[0].name):
            return path
        warnings.warn(f"{path} holds only the folder {folders[0].name!r} and no images of its own: reading the "
                      f"dataset from {folders[0]}", stacklevel=4)
        path = folders[0]
    return path


def resolve(source: str | os.PathLike | None) -> tuple[str, str | Path]:
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
        raise DataSourceError(f"{root} has a {next(iter(split_dirs))}/ folder but not its partner: add both train/ "
                              "and test/")
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
            raise DataSourceError(f"{split_root} has no folder for {', '.join(missing)}: every class needs training "
                                  "images")
        out[split] = files
    return out


class Converter:
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


def _decode_files(items: list[tuple[Path, int]], root: Path, conv: Converter) -> Split:
    images = [conv(f.read_bytes(), str(f)) for f, _ in items]
    return Split(
        torch.stack(images),
        torch.tensor([label for _, label in items], dtype=torch.long),
        tuple(f.relative_to(root).as_posix() for f, _ in items),
    )


def load_image_folder(root: Path, conv: Converter) -> tuple[Split, Split]:
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


def _load_hub_folder_pyarrow(root: Path, conv: Converter) -> tuple[Split, Split]:
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
        shards = []
        for f in files:
            table = pq.read_table(f)
            meta = json.loads((table.schema.metadata or {}).get(b"huggingface", b"{}"))
            names = meta.get("info", {}).get("features", {}).get("label", {}).get("names")
            shards.append((names, zip(table.column("image").to_pylist(), table.column("label").to_pylist())))
        splits.append(_hub_split(name, shards, root, conv))
    return splits[0], splits[1]


def _hub_split(name: str, shards: Iterable[tuple[Sequence[str] | None, Iterable[tuple[dict[str, Any], int]]]],
               root: Path, conv: Converter) -> Split:
    """One split from hub rows (``({"bytes", "path"}, label)`` per row, shard by shard with the shard's class names):
    the same decoding, ids (``train/00000``) and label mapping whether ``datasets`` or pyarrow read the rows."""
    images, labels = [], []
    for names, rows in shards:
        remap = [class_id(n) for n in names] if names else list(range(NUM_CLASSES))
        for image, label in rows:
            data = image["bytes"] or (root / image["path"]).read_bytes()
            images.append(conv(data, f"{name} row {len(images)}"))
            labels.append(remap[label])
    return Split(torch.stack(images), torch.tensor(labels), tuple(f"{name}/{i:05d}" for i in range(len(images))))


def load_hub(location: str | Path, conv: Converter) -> tuple[Split, Split]:
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
        # a row without bytes names its file as datasets resolved it: taken as it is (Path(".") / path is path)
        splits.append(_hub_split(name, [(names, ((item["image"], item["label"]) for item in ds))], Path("."), conv))
    return splits[0], splits[1]


def source_fingerprint(source: str | os.PathLike | None = None) -> str:
    """A short hash that changes whenever the source's images change (the cache key)."""
    return fingerprint(*resolve(source))


def fingerprint(kind: str, location: str | Path) -> str:
    if kind == "hub":
        return hashlib.sha256(f"hub:{location}".encode()).hexdigest()[:16]
    root = Path(location)
    # content, not size and mtime: a copy of the same files (another machine, a fresh checkout, a re-synced share)
    # has the same fingerprint, so its results folders and caches stay valid; ~0.1 s for the 28 MB dataset
    if kind == "hub_folder":
        return _hash_files(sorted(root.rglob("*.parquet")), root, content=True)
    files = sorted(f for f in root.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
    return _hash_files(files, root, content=True)



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
