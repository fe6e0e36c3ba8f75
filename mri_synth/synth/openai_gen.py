"""The ``openai`` generator: variations of a slice from OpenAI's images API (or a compatible server).

The thesis sent each slice to DALL-E 2's image-variation endpoint; DALL-E 2 and that endpoint were retired on
2026-05-12 (and ``gpt-image-1`` was shut down on 2026-10-23). The current way is the images *edit* endpoint with a
GPT image model and a prompt asking for a faithful variation, which is the default here. The legacy
``create_variation`` call is kept (``endpoint="variation"``) for OpenAI-compatible servers (``base_url``) that
still serve it.

- The key comes from ``OPENAI_API_KEY`` only; it is never stored, logged, or part of a fingerprint.
- Retries: the ``openai`` client itself retries 408/409/429/5xx and timeouts with exponential backoff
  (0.5 s doubling to 8 s, with jitter, honouring ``Retry-After``); ``max_retries`` and ``timeout`` set it. When
  the retries run out the run stops with :class:`~mri_synth.synth.base.GenerationError` (nothing was paid; the
  bank resumes). A refusal (content policy or another 400/413/415/422) is returned as ``status="refused"`` and
  the run goes on. 401/403/404 stop the run: they are the same for every image (key, access, model name).
- Cost: an *estimate* per image from :data:`PRICE_PER_IMAGE_USD` (override with ``price_per_image_usd``); the
  bank sums it for its budget cap and dry run. It is not the bill: check https://openai.com/api/pricing.

Storage, resume and the budget are the bank's (:mod:`mri_synth.synth.bank`).
"""

from __future__ import annotations

import base64
import os
import re
import time
from typing import TYPE_CHECKING, Any, Sequence

import torch

from mri_synth.synth.base import GenerationError, SourceResult, check_sources, fingerprint_of, from_image_bytes, to_png

if TYPE_CHECKING:
    import openai

DEFAULT_MODEL = "gpt-image-2.5-sunburst"
"""The installed client's docstring names gpt-image-2.5-sunburst/-flare as the successors of gpt-image-1."""

DEFAULT_PROMPT = (
    "Create a faithful variation of this axial brain MRI slice, as if it were another slice from a scan of the "
    "same patient. Keep the anatomy, orientation, field of view, contrast and the exact degree of brain atrophy "
    "and ventricle enlargement; change only fine detail and noise. Grayscale only, black background, "
    "no text, no labels, no annotations, no colour."
)

PRICE_PER_IMAGE_USD: dict[tuple[str, str], float] = {
    # (model, quality) -> USD per 1024x1024 output image, input image included. Estimates from OpenAI's price
    # list for gpt-image-1-mini/1.5; the 2.x rows are placeholders at gpt-image-1.5 rates until checked.
    ("gpt-image-1-mini", "low"): 0.005, ("gpt-image-1-mini", "medium"): 0.011, ("gpt-image-1-mini", "high"): 0.036,
    ("gpt-image-1.5", "low"): 0.009, ("gpt-image-1.5", "medium"): 0.034, ("gpt-image-1.5", "high"): 0.133,
    ("gpt-image-2", "low"): 0.009, ("gpt-image-2", "medium"): 0.034, ("gpt-image-2", "high"): 0.133,
    ("gpt-image-2.5-sunburst", "low"): 0.009, ("gpt-image-2.5-sunburst", "medium"): 0.034,
    ("gpt-image-2.5-sunburst", "high"): 0.133,
    ("gpt-image-2.5-flare", "low"): 0.009, ("gpt-image-2.5-flare", "medium"): 0.034,
    ("gpt-image-2.5-flare", "high"): 0.133,
    # The legacy variation endpoint priced by size (DALL-E 2's list prices).
    ("dall-e-2", "256x256"): 0.016, ("dall-e-2", "512x512"): 0.018, ("dall-e-2", "1024x1024"): 0.020,
}

_SNAPSHOT = re.compile(r"-\d{4}-\d{2}-\d{2}$")
_REFUSAL_STATUS = (400, 413, 415, 422)


def price_per_image(model: str, quality: str, size: str, table: dict[tuple[str, str], float] | None = None) -> float:
    """Estimated USD per image; dated snapshots share their model's price, other sizes scale with pixel count.

    Raises:
        ValueError: No price is known; the message says how to give one.
    """
    table = PRICE_PER_IMAGE_USD if table is None else table
    base = _SNAPSHOT.sub("", model)
    for key in ((base, size), (base, quality)):
        if key in table:
            price = table[key]
            break
    else:
        raise ValueError(
            f"no price known for model {model!r} at quality {quality!r}, size {size!r}; pass "
            "OpenAIGenerator(price_per_image_usd=...) or add it to mri_synth.synth.openai_gen.PRICE_PER_IMAGE_USD"
        )
    if (base, size) not in table and re.fullmatch(r"\d+x\d+", size):
        w, h = map(int, size.split("x"))
        price *= max(w * h / 1024**2, 1.0)  # bigger outputs cost more; smaller ones are not cheaper
    return price


class OpenAIGenerator:
    """Variations from OpenAI's images API (edit with a GPT image model, or the legacy variation call).

    Args:
        model: Image model. Default :data:`DEFAULT_MODEL`; ``"dall-e-2"`` with ``endpoint="variation"`` for a
            server that still serves it.
        prompt: What to ask for (edit endpoint only; the variation endpoint takes no prompt).
        size: Output size asked for; results are brought back to 128x128 grayscale.
        quality: GPT image quality ("low" is enough: results are shrunk to 128 px).
        n: Images per call (1..10); one call per source sends the source once for ``n`` variants.
        endpoint: ``"edit"`` (current) or ``"variation"`` (legacy ``create_variation``).
        input_size: Side of the square PNG the 128 px slice is sent as.
        base_url: An OpenAI-compatible server; default the client's (``OPENAI_BASE_URL`` or api.openai.com).
        timeout: Seconds per request before the client gives up on it (and retries).
        max_retries: Retries of the client on 429/5xx/timeouts, with exponential backoff.
        price_per_image_usd: Overrides the price table (USD per image).
        extra_params: Further ``images.edit`` parameters (e.g. ``{"input_fidelity": "high"}``), recorded in the
            fingerprint.
    """

    name = "openai"
    sources_per_call = 1  # one call per source, so a kill never loses more than one call's paid images

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        prompt: str = DEFAULT_PROMPT,
        size: str = "1024x1024",
        quality: str = "low",
        n: int = 1,
        endpoint: str = "edit",
        input_size: int = 1024,
        base_url: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 4,
        price_per_image_usd: float | None = None,
        extra_params: dict[str, Any] | None = None,
    ) -> None:
        if endpoint not in ("edit", "variation"):
            raise ValueError(f"endpoint must be 'edit' or 'variation', got {endpoint!r}")
        if not 1 <= n <= 10:
            raise ValueError(f"n must be between 1 and 10 (the API's limit), got {n}")
        if endpoint == "variation" and size not in ("256x256", "512x512", "1024x1024"):
            raise ValueError(f"the variation endpoint takes sizes 256x256, 512x512 or 1024x1024, got {size!r}")
        if input_size % 16 or not 16 <= input_size <= 4096:
            raise ValueError(f"input_size must be a multiple of 16 between 16 and 4096, got {input_size}")
        self.model, self.prompt, self.size, self.quality, self.n = model, prompt, size, quality, n
        self.endpoint, self.input_size, self.timeout, self.max_retries = endpoint, input_size, timeout, max_retries
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        self.extra_params = dict(extra_params or {})
        self.price = price_per_image_usd if price_per_image_usd is not None else price_per_image(model, quality, size)
        self._client: openai.OpenAI | None = None

    @property
    def variants_per_call(self) -> int:
        return self.n

    def describe(self) -> dict[str, Any]:
        """Name, model and settings (no key): what the fingerprint hashes and the bank records."""
        return {"name": self.name, "model": self.model, "endpoint": self.endpoint, "size": self.size,
                "quality": self.quality if self.endpoint == "edit" else None, "n": self.n,
                "prompt": self.prompt if self.endpoint == "edit" else None, "input_size": self.input_size,
                "base_url": self.base_url, "extra_params": self.extra_params, "price_per_image_usd": self.price}

    @property
    def fingerprint(self) -> str:
        settings = self.describe()
        settings.pop("price_per_image_usd")  # a price correction does not change the images
        return fingerprint_of(self.name, settings)

    def estimate_cost_usd(self, n_images: int) -> float:
        """Estimated USD for ``n_images`` images."""
        return self.price * n_images

    @property
    def client(self) -> openai.OpenAI:
        """The ``openai`` client, made on first use so a dry run needs no key."""
        if self._client is None:
            import openai  # here, not at the top: the core (and the GPU machines, which lack it) need no client

            key = os.environ.get("OPENAI_API_KEY")
            if not key:
                raise GenerationError(
                    "OPENAI_API_KEY is not set; export it in the shell that runs this (never write it into a "
                    "notebook or file), or run fill(..., dry_run=True) to see the cost without calling"
                )
            self._client = openai.OpenAI(api_key=key, base_url=self.base_url, timeout=self.timeout,
                                         max_retries=self.max_retries)
        return self._client

    def _request(self, png: bytes, n: int) -> tuple[list[str], int]:
        """One API call; the base64 images and the number of retries the client took."""
        image = ("source.png", png, "image/png")
        if self.endpoint == "edit":
            raw = self.client.images.with_raw_response.edit(
                image=image, prompt=self.prompt, model=self.model, n=n, size=self.size, quality=self.quality,
                **self.extra_params)
        else:
            raw = self.client.images.with_raw_response.create_variation(
                image=image, model=self.model, n=n, size=self.size, response_format="b64_json")
        data = raw.parse().data or []
        if any(d.b64_json is None for d in data):
            raise GenerationError(f"{self.base_url} answered with image URLs, not base64; this generator needs "
                                  "b64_json responses (the edit endpoint of GPT image models always sends them)")
        return [d.b64_json for d in data], raw.retries_taken

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
        """One API call per source for ``n_variants`` (<= ``n``) images; refusals come back as results.

        ``seed`` is not sent (the API takes none); the bank records it for provenance.
        """
        import openai

        check_sources(images, labels, ids)
        if not 1 <= n_variants <= self.n:
            raise ValueError(f"n_variants must be between 1 and n={self.n}, got {n_variants}")
        results = []
        for image, source_id in zip(images, ids):
            start = time.perf_counter()
            common = {"source_id": source_id, "model": self.model,
                      "prompt": self.prompt if self.endpoint == "edit" else None}
            try:
                b64, retries = self._request(to_png(image, self.input_size), n_variants)
            except openai.APIStatusError as err:
                if err.status_code in _REFUSAL_STATUS:
                    results.append(SourceResult(images=torch.empty(0, 1, 128, 128, dtype=torch.uint8),
                                                status="refused", seconds=time.perf_counter() - start,
                                                detail=f"{err.status_code} {err.code or ''}: {err.message}"[:300],
                                                **common))
                    continue
                raise GenerationError(self._stop_message(err)) from err
            except openai.APIConnectionError as err:  # includes APITimeoutError, after the client's retries
                raise GenerationError(self._stop_message(err)) from err
            decoded = torch.stack([from_image_bytes(base64.b64decode(b)) for b in b64]) if b64 else \
                torch.empty(0, 1, 128, 128, dtype=torch.uint8)
            results.append(SourceResult(images=decoded, status="ok", cost_usd=self.estimate_cost_usd(len(b64)),
                                        seconds=time.perf_counter() - start, detail=f"retries={retries}", **common))
        return results

    def _stop_message(self, err: Exception) -> str:
        status = getattr(err, "status_code", None)
        hint = {401: "check OPENAI_API_KEY", 403: "this key has no access to the model; pick another model",
                404: f"model {self.model!r} or the {self.endpoint} endpoint is not served at {self.base_url}",
                429: "rate limit or quota; wait, or raise max_retries"}.get(status or 0,
                                                                         "the server is unavailable; try later")
        retryable = status in (None, 408, 409, 429) or (status or 0) >= 500
        retried = f" after {self.max_retries} retries" if retryable else ""
        return f"OpenAI {type(err).__name__}{retried} ({status or 'no response'}): {hint}"
