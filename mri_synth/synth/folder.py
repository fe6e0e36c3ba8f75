"""The ``folder`` generator: synthetic images someone already made, with any tool, one sub-folder per class.

Layout::

    <root>/<class name>/<file>.png|jpg|...      class names as in mri_synth.data.types.CLASS_NAMES (case and
                                                 separators are forgiven, e.g. "MildDemented", "mild_demented")

A file whose name (without suffix) matches ``<source id, %-quoted>__v<k>`` (the way the bank names its own
files, e.g. ``train%2F00042__v0.png``) is a variant of that source; such files are what
:meth:`FolderGenerator.generate` hands the bank, so that a trial still only sees variants of its own sources.
Files without a source id can be read with :meth:`FolderGenerator.load_all` (class-level use only).

It costs nothing and never changes the files; their decoding is shared with the other generators
(:func:`mri_synth.synth.base.from_image_bytes`).
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import unquote

import torch

from mri_synth.data.types import CLASS_NAMES, class_id
from mri_synth.synth.base import SourceResult, check_sources, fingerprint_of, from_image_bytes

SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
SOURCE_PATTERN = r"^(?P<source>.+)__v(?P<variant>\d+)$"


class FolderGenerator:
    """Images already on disk, one sub-folder per class, optionally named after their source id.

    Args:
        root: The folder holding one sub-folder per class.
        source_pattern: Regex on the file stem with groups ``source`` (%-quoted id) and ``variant``.
    """

    name = "folder"
    sources_per_call = 256  # reading files is cheap; batch to keep the journal short
    variants_per_call = 1_000_000

    def __init__(self, root: str | os.PathLike, *, source_pattern: str = SOURCE_PATTERN) -> None:
        self.root = Path(root).expanduser().resolve()
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root} is not a folder; pass a folder with one sub-folder per class "
                                    f"({', '.join(CLASS_NAMES)})")
        self.source_pattern = re.compile(source_pattern)
        self.files: list[tuple[Path, int, str | None, int]] = []  # path, label, source id, variant
        for sub in sorted(p for p in self.root.iterdir() if p.is_dir()):
            label = class_id(sub.name)  # raises naming the accepted class folder names
            for path in sorted(sub.iterdir()):
                if path.suffix.lower() not in SUFFIXES:
                    continue
                m = self.source_pattern.match(path.stem)
                self.files.append((path, label, unquote(m["source"]) if m else None,
                                   int(m["variant"]) if m else -1))
        if not self.files:
            raise FileNotFoundError(f"no images ({', '.join(SUFFIXES)}) in class sub-folders of {self.root}")
        self._by_source: dict[str, list[tuple[Path, int, int]]] = {}
        for path, label, source, variant in self.files:
            if source is not None:
                self._by_source.setdefault(source, []).append((path, label, variant))
        for items in self._by_source.values():
            items.sort(key=lambda item: (item[2], item[0].name))
        listing = "\n".join(f"{p.relative_to(self.root)}\t{p.stat().st_size}" for p, *_ in self.files)
        self._listing_sha256 = hashlib.sha256(listing.encode()).hexdigest()[:16]  # taken once: files may move later

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "model": "files", "root": str(self.root), "n_files": len(self.files),
                "files_sha256": self._listing_sha256,
                "source_pattern": self.source_pattern.pattern}

    @property
    def fingerprint(self) -> str:
        """Changes when files are added, removed or resized, so a bank never mixes two versions of a folder."""
        return fingerprint_of(self.name, self.describe())

    def estimate_cost_usd(self, n_images: int) -> float:
        return 0.0

    @property
    def source_ids(self) -> list[str]:
        """The source ids some file in the folder is a variant of."""
        return sorted(self._by_source)

    def generate(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        ids: Sequence[str],
        n_variants: int,
        seed: int,
        *,
        first_variant: int = 0,
    ) -> list[SourceResult]:
        """The files of each source, in variant order, positions ``first_variant`` onwards; ``seed`` is unused."""
        check_sources(images, labels, ids)
        results = []
        for source_id, label in zip(ids, labels.tolist()):
            start = time.perf_counter()
            items = self._by_source.get(source_id, [])[first_variant:first_variant + n_variants]
            wrong = [p for p, lab, _ in items if lab != label]
            if wrong:
                raise ValueError(f"{wrong[0]} is filed under {CLASS_NAMES[self._label_of(wrong[0])]} but its source "
                                 f"{source_id} is {CLASS_NAMES[label]}; move it to the right class folder")
            decoded = torch.stack([from_image_bytes(p.read_bytes()) for p, *_ in items]) if items else \
                torch.empty(0, 1, 128, 128, dtype=torch.uint8)
            results.append(SourceResult(source_id=source_id, images=decoded, status="ok" if items else "missing",
                                        seconds=time.perf_counter() - start, model="files",
                                        detail=";".join(p.name for p, *_ in items)[:300] or "no file of this source"))
        return results

    def _label_of(self, path: Path) -> int:
        return next(label for p, label, *_ in self.files if p == path)

    def load_all(self) -> tuple[torch.Tensor, torch.Tensor, tuple[str | None, ...]]:
        """Every image in the folder: ``(images uint8[N,1,128,128], labels int64[N], source ids or None)``."""
        images = torch.stack([from_image_bytes(p.read_bytes()) for p, *_ in self.files])
        labels = torch.tensor([label for _, label, *_ in self.files], dtype=torch.int64)
        return images, labels, tuple(source for *_, source, _ in self.files)
