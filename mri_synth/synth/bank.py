"""The on-disk bank of synthetic images: fill it once with any generator, sample from it per trial.

Layout of a bank folder (one sub-folder per generator fingerprint)::

    <root>/<fingerprint>/generator.json     what made the images (name, model, settings; never a key)
    <root>/<fingerprint>/journal.jsonl      append-only log: a "start" line before each call, a "done" line after
    <root>/<fingerprint>/images/<source id, %-quoted>__v<variant>.png

Why a journal: a generation run may be killed at any moment, and a paid call must never be repeated. A call is
logged ("start", fsynced) before it is sent and settled ("done") after its images are written, each image by an
atomic rename, so no half-written file is ever visible. On the next ``fill`` a call that started but never
settled is *interrupted*: the images it managed to write are adopted, the rest are counted as possibly paid and,
for a generator that costs money, not sent again unless ``retry_interrupted=True``. Refusals are settled too
(``retry_refused=True`` asks again); failures (nothing paid) are retried.

What the bank leaves to others: how images are made (``mri_synth.synth`` generators), which sources a trial may
use (``mri_synth.study.trial`` passes exactly its real subset's ids to :meth:`SyntheticBank.sample`).
"""

from __future__ import annotations

import fcntl
import json
import os
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Sequence
from urllib.parse import quote

import pandas as pd
import torch
from tqdm.auto import tqdm

from mri_synth import paths
from mri_synth.synth.base import FillSummary, GenerationError, Generator, check_sources, from_image_bytes, to_png

MANIFEST_COLUMNS = (
    "generator", "fingerprint", "model", "prompt", "seed", "source_id", "label", "variant", "cost_usd",
    "seconds", "status", "detail", "path", "call_id", "created_at",
)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _file_name(source_id: str, variant: int) -> str:
    return f"{quote(source_id, safe='')}__v{variant:03d}.png"


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)  # atomic on POSIX: the file is either absent or complete


class SyntheticBank:
    """Synthetic images on disk keyed by (generator fingerprint, source id, variant index).

    Args:
        root: The bank folder; default ``mri_synth.paths.cache_dir()/"bank"``.
    """

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root) if root is not None else paths.cache_dir() / "bank"

    def __repr__(self) -> str:
        return f"SyntheticBank({str(self.root)!r})"

    # -- journal ------------------------------------------------------------------------------------------------

    def _dir(self, fingerprint: str) -> Path:
        return self.root / fingerprint

    def _events(self, fingerprint: str) -> list[dict[str, Any]]:
        journal = self._dir(fingerprint) / "journal.jsonl"
        if not journal.exists():
            return []
        events = []
        for line in journal.read_text().splitlines():
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut short by a kill mid-append carries nothing settled
        return events

    def _append(self, fingerprint: str, event: dict[str, Any]) -> None:
        with open(self._dir(fingerprint) / "journal.jsonl", "a") as f:
            f.write(json.dumps(event) + "\n")
            f.flush()
            os.fsync(f.fileno())

    @contextmanager
    def _lock(self, fingerprint: str) -> Iterator[None]:
        with open(self._dir(fingerprint) / ".lock", "w") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RuntimeError(f"another fill is writing {self._dir(fingerprint)}; wait for it to finish or use "
                                   "another bank folder") from None
            yield

    def _rows(self, fingerprint: str) -> list[dict[str, Any]]:
        """One row per settled or interrupted (source, variant) outcome, in journal order."""
        events = self._events(fingerprint)
        meta = self._meta(fingerprint)
        settled = {e["call"] for e in events if e["event"] == "done"}
        rows: list[dict[str, Any]] = []
        for e in events:
            base = {"generator": meta.get("name", ""), "fingerprint": fingerprint, "call_id": e["call"],
                    "created_at": e["at"]}
            if e["event"] == "done":
                for r in e["results"]:
                    n = max(len(r["variants"]), 1)
                    for j, v in enumerate(r["variants"]):
                        rows.append({**base, "model": r["model"], "prompt": r["prompt"],
                                     "seed": r["seeds"][j] if r["seeds"] else None, "source_id": r["source_id"],
                                     "label": r["label"], "variant": v, "cost_usd": r["cost_usd"] / n,
                                     "seconds": r["seconds"] / n, "status": r["status"], "detail": r["detail"],
                                     "path": r["files"][j] if r["files"] else None})
            elif e["event"] == "start" and e["call"] not in settled:
                share = e["estimated_cost_usd"] / max(sum(len(i["variants"]) for i in e["items"]), 1)
                for item in e["items"]:
                    for v in item["variants"]:
                        rows.append({**base, "model": meta.get("model", ""), "prompt": None, "seed": None,
                                     "source_id": item["source_id"], "label": item["label"], "variant": v,
                                     "cost_usd": share, "seconds": 0.0, "status": "interrupted",
                                     "detail": "killed mid-call; counted as possibly paid", "path": None})
        return rows

    def _meta(self, fingerprint: str) -> dict[str, Any]:
        meta = self._dir(fingerprint) / "generator.json"
        return json.loads(meta.read_text()) if meta.exists() else {}

    def _recover(self, fingerprint: str) -> None:
        """Settle calls a kill left open: adopt the images they finished writing, log the rest as interrupted."""
        for tmp in (self._dir(fingerprint) / "images").glob(".*.tmp"):
            tmp.unlink()  # a write cut short; its image was never visible under its real name
        events = self._events(fingerprint)
        settled = {e["call"] for e in events if e["event"] == "done"}
        for e in events:
            if e["event"] != "start" or e["call"] in settled:
                continue
            share = e["estimated_cost_usd"] / max(sum(len(i["variants"]) for i in e["items"]), 1)
            results = []
            for item in e["items"]:
                found = [v for v in item["variants"] if (self._dir(fingerprint) / "images" /
                                                         _file_name(item["source_id"], v)).exists()]
                lost = [v for v in item["variants"] if v not in found]
                for status, variants in (("ok", found), ("interrupted", lost)):
                    if variants:
                        results.append({"source_id": item["source_id"], "label": item["label"], "status": status,
                                        "variants": variants, "seeds": [], "cost_usd": share * len(variants),
                                        "seconds": 0.0, "model": self._meta(fingerprint).get("model", ""),
                                        "prompt": None, "detail": "recovered after a kill",
                                        "files": [f"images/{_file_name(item['source_id'], v)}" for v in variants]
                                        if status == "ok" else []})
            self._append(fingerprint, {"event": "done", "call": e["call"], "at": _now(), "results": results})

    # -- public API -----------------------------------------------------------------------------------------------

    def fill(
        self,
        generator: Generator,
        images: torch.Tensor,
        labels: torch.Tensor,
        ids: Sequence[str],
        n_variants: int,
        *,
        seed: int = 0,
        budget_usd: float | None = None,
        dry_run: bool = False,
        progress: bool = True,
        retry_refused: bool = False,
        retry_interrupted: bool = False,
    ) -> FillSummary:
        """Make sure every source has ``n_variants`` variations from ``generator``; resumable.

        Args:
            generator: Any :class:`~mri_synth.synth.base.Generator`.
            images: Source images ``uint8[N, 1, 128, 128]``.
            labels: ``int64[N]`` class ids.
            ids: One stable id per source (a Split's ``.ids``).
            n_variants: Variants wanted per source (variant indices ``0 .. n_variants - 1``).
            seed: Base seed; each variant's own seed derives from it, the source id and the variant index.
            budget_usd: The most this generator may have spent in this bank in total (earlier runs and possibly
                paid interrupted calls included). A call whose estimate would exceed it is not sent.
            dry_run: Print the number of calls and the estimated cost, send nothing.
            progress: Show a progress bar.
            retry_refused: Ask again for variants the generator refused before.
            retry_interrupted: Send again calls a kill interrupted (they may have been paid already). Calls of a
                free generator are always sent again.

        Returns:
            A :class:`FillSummary` (counts and estimated cost).

        Raises:
            GenerationError: The generator cannot go on; all finished calls are kept and a new ``fill`` resumes.
        """
        check_sources(images, labels, ids)
        if n_variants < 1:
            raise ValueError(f"n_variants must be >= 1, got {n_variants}")
        fp = generator.fingerprint
        folder = self._dir(fp)
        (folder / "images").mkdir(parents=True, exist_ok=True)
        with self._lock(fp):
            meta = folder / "generator.json"
            if not meta.exists():
                _atomic_write(meta, json.dumps(generator.describe(), indent=1, sort_keys=True).encode())
            self._recover(fp)
            rows = self._rows(fp)
            free = generator.estimate_cost_usd(1) == 0
            latest = {(r["source_id"], r["variant"]): r["status"] for r in rows}
            keep = {"ok", "missing"} | ({"refused"} if not retry_refused else set())
            keep |= {"interrupted"} if not (retry_interrupted or free) else set()
            interrupted = sum(1 for s in latest.values() if s == "interrupted" and "interrupted" in keep)
            plan = self._plan(generator, ids, n_variants, latest, keep)
            pending = sum(len(call[1]) * call[0][1] for call in plan)
            estimate = sum(generator.estimate_cost_usd(len(call[1]) * call[0][1]) for call in plan)
            spent = sum(r["cost_usd"] for r in rows)
            summary = dict(fingerprint=fp, requested=len(ids) * n_variants, already_done=len(ids) * n_variants
                           - pending, pending=pending, calls_planned=len(plan), estimated_cost_usd=estimate,
                           interrupted=interrupted, total_cost_usd=spent)
            if dry_run:
                result = FillSummary(**summary, dry_run=True)
                print(f"dry run, nothing sent: {result}")
                return result
            index = {sid: i for i, sid in enumerate(ids)}
            counts = {"made": 0, "refused": 0, "calls_sent": 0, "cost_usd": 0.0}
            stopped = False
            for (first, count), sources in tqdm(plan, desc=f"fill {fp}", disable=not progress, unit="call"):
                call_cost = generator.estimate_cost_usd(len(sources) * count)
                if budget_usd is not None and spent + call_cost > budget_usd + 1e-12:
                    stopped = True
                    break
                rows_idx = torch.tensor([index[s] for s in sources])
                self._call(generator, fp, images[rows_idx], labels[rows_idx], sources, first, count, seed,
                           call_cost, counts)
                spent += counts.pop("_last_cost")
            result = FillSummary(**{**summary, "total_cost_usd": spent}, **counts, stopped_by_budget=stopped)
            if stopped:
                print(f"budget ${budget_usd:.4f} reached: {result}")
            return result

    @staticmethod
    def _plan(generator: Generator, ids: Sequence[str], n_variants: int, latest: dict, keep: set) \
            -> list[tuple[tuple[int, int], list[str]]]:
        """Group the missing (source, variant) pairs into calls: runs of consecutive variants, batched by source."""
        groups: dict[tuple[int, int], list[str]] = {}
        for sid in ids:
            todo = [v for v in range(n_variants) if latest.get((sid, v)) not in keep]
            run: list[int] = []
            for v in todo + [None]:  # None closes the last run
                if run and (v is None or v != run[-1] + 1 or len(run) == generator.variants_per_call):
                    groups.setdefault((run[0], len(run)), []).append(sid)
                    run = []
                if v is not None:
                    run.append(v)
        per = max(1, generator.sources_per_call)
        return [(key, sources[i:i + per]) for key, sources in groups.items() for i in range(0, len(sources), per)]

    def _call(self, generator: Generator, fp: str, images: torch.Tensor, labels: torch.Tensor,
              sources: list[str], first: int, count: int, seed: int, call_cost: float, counts: dict) -> None:
        call_id = uuid.uuid4().hex
        variants = list(range(first, first + count))
        self._append(fp, {"event": "start", "call": call_id, "at": _now(), "seed": seed,
                          "estimated_cost_usd": call_cost,
                          "items": [{"source_id": s, "label": int(y), "variants": variants}
                                    for s, y in zip(sources, labels.tolist())]})
        try:
            results = generator.generate(images, labels, sources, count, seed, first_variant=first)
        except Exception as err:
            failed = [{"source_id": s, "label": int(y), "status": "error", "variants": variants, "seeds": [],
                       "cost_usd": 0.0, "seconds": 0.0, "model": "", "prompt": None, "files": [],
                       "detail": f"{type(err).__name__}: {err}"[:500]} for s, y in zip(sources, labels.tolist())]
            self._append(fp, {"event": "done", "call": call_id, "at": _now(), "results": failed})
            raise GenerationError(
                f"{generator.name} failed ({type(err).__name__}: {err}); every finished call is saved in "
                f"{self._dir(fp)}; fix the cause and run fill again to resume"
            ) from err
        by_source = {r.source_id: r for r in results}
        if set(by_source) != set(sources):
            raise GenerationError(f"{generator.name} returned results for {sorted(by_source)}, asked for {sources}")
        done = []
        for sid, label in zip(sources, labels.tolist()):
            r = by_source[sid]
            made = variants[: len(r.images)]
            files = []
            for v, image in zip(made, r.images):
                name = _file_name(sid, v)
                _atomic_write(self._dir(fp) / "images" / name, to_png(image))
                files.append(f"images/{name}")
            done.append({"source_id": sid, "label": int(label), "status": r.status,
                         "variants": made if r.status == "ok" else variants,
                         "seeds": list(r.seeds)[:len(made)] or [seed] * len(made), "cost_usd": r.cost_usd,
                         "seconds": r.seconds, "model": r.model, "prompt": r.prompt, "detail": r.detail,
                         "files": files if r.status == "ok" else []})
            if r.status == "ok":
                counts["made"] += len(made)
            else:  # refused, or (folder) no such image: settled either way
                counts["refused"] += count
        self._append(fp, {"event": "done", "call": call_id, "at": _now(), "results": done})
        counts["calls_sent"] += 1
        counts["_last_cost"] = sum(r.cost_usd for r in results)
        counts["cost_usd"] += counts["_last_cost"]

    def fingerprints(self) -> list[str]:
        """The generator fingerprints this bank holds."""
        return sorted(p.name for p in self.root.glob("*") if (p / "journal.jsonl").exists())

    def manifest(self) -> pd.DataFrame:
        """One row per image or per refused/failed/interrupted variant, every generator, in journal order."""
        rows = [r for fp in self.fingerprints() for r in self._rows(fp)]
        return pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))

    def cost_usd(self, fingerprint: str | None = None) -> float:
        """Estimated spend recorded in this bank (one generator's, or all)."""
        fps = [fingerprint] if fingerprint else self.fingerprints()
        return float(sum(r["cost_usd"] for fp in fps for r in self._rows(fp)))

    def available(self, source_ids: Sequence[str], generator_fingerprint: str) -> dict[str, list[int]]:
        """Variant indices held for each of ``source_ids`` (sources without any are left out)."""
        wanted = set(source_ids)
        out: dict[str, list[int]] = {}
        for r in self._rows(generator_fingerprint):
            if r["status"] == "ok" and r["source_id"] in wanted:
                out.setdefault(r["source_id"], []).append(r["variant"])
        return {s: sorted(set(v)) for s, v in out.items()}

    def sample(
        self,
        source_ids: Sequence[str],
        k: int,
        seed: int,
        *,
        generator_fingerprint: str | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...], tuple[str, ...]]:
        """Draw ``k`` variants of exactly these sources, spread as evenly over the sources as possible.

        Every source gives one variant (in a seeded random order) before any gives a second, so the synthetic
        images keep the class mix of the real subset they come from.

        Args:
            source_ids: The ids of the trial's real images; no variant of any other image is returned.
            k: How many synthetic images.
            seed: Seed of the draw.
            generator_fingerprint: Which generator's variants; may be omitted when only one generator has
                variants of these sources.

        Returns:
            ``(images uint8[k, 1, 128, 128], labels int64[k], synthetic_ids, source_ids)``; ``source_ids[i]`` is the
            real image ``images[i]`` is a variant of.
        """
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        fp = generator_fingerprint or self._only_fingerprint(source_ids)
        wanted = set(source_ids)
        rows = [r for r in self._rows(fp) if r["status"] == "ok" and r["source_id"] in wanted]
        by_source: dict[str, dict[int, dict]] = {}
        for r in rows:
            by_source.setdefault(r["source_id"], {})[r["variant"]] = r
        if sum(len(v) for v in by_source.values()) < k:
            need = -(-k // max(len(set(source_ids)), 1))
            raise ValueError(
                f"the bank {self.root} holds {sum(len(v) for v in by_source.values())} variants of these "
                f"{len(set(source_ids))} sources from {fp}, {k} asked for; fill it first: "
                f"bank.fill(generator, images, labels, ids, n_variants={need}) with those sources"
            )
        gen = torch.Generator().manual_seed(seed)
        order = sorted(by_source)
        order = [order[i] for i in torch.randperm(len(order), generator=gen).tolist()]
        queues = {s: [sorted(by_source[s])[i] for i in torch.randperm(len(by_source[s]), generator=gen).tolist()]
                  for s in order}
        picked: list[dict] = []
        while len(picked) < k:  # round robin: each pass takes one more variant of every source that has one
            for s in order:
                if queues[s] and len(picked) < k:
                    picked.append(by_source[s][queues[s].pop(0)])
        images = torch.stack([from_image_bytes((self._dir(fp) / r["path"]).read_bytes()) for r in picked]) \
            if picked else torch.empty(0, 1, 128, 128, dtype=torch.uint8)
        labels = torch.tensor([r["label"] for r in picked], dtype=torch.int64)
        synthetic_ids = tuple(f"{fp}/{r['source_id']}/v{r['variant']:03d}" for r in picked)
        return images, labels, synthetic_ids, tuple(r["source_id"] for r in picked)

    def _only_fingerprint(self, source_ids: Sequence[str]) -> str:
        wanted = set(source_ids)
        fps = [fp for fp in self.fingerprints()
               if any(r["status"] == "ok" and r["source_id"] in wanted for r in self._rows(fp))]
        if len(fps) != 1:
            raise ValueError(
                f"{len(fps)} generators in {self.root} have variants of these sources ({fps}); "
                "pass generator_fingerprint=generator.fingerprint" if fps else
                f"no variants of these sources in {self.root}; fill the bank first: bank.fill(generator, ...)"
            )
        return fps[0]
