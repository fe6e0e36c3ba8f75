"""The latent diffusion generator's settings: :class:`LatentDiffusionConfig` and its presets.

Every field enters the generator's fingerprint (the bank's key); the fields of ``trained.SAMPLING_FIELDS``
(strength, sampler, steps, guidance, channels-last sampling) only decide how a trained model is sampled, so the
weights' cache ignores them (``trained.load_or_train``): the ``cpu-fast`` preset samples the ``cpu`` preset's weights.
The model itself is :mod:`mri_synth.synth.latent`'s, the autoencoder :mod:`mri_synth.synth.autoencoder`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from mri_synth.synth.base import IMAGE_SIZE
from mri_synth.synth.trained import check_sdedit_settings, pick_preset

PRESETS = ("toy", "cpu", "cpu-fast", "gpu")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
"""The sizes of the generator, each a ``LatentDiffusionConfig`` class method; ``.preset(name)`` picks one."""


@dataclass(frozen=True)
class LatentDiffusionConfig:
    """Everything that shapes a trained latent diffusion generator (all of it enters the fingerprint)."""

    # autoencoder: one 2x downsampling between consecutive levels, so 3 levels give a 32x32 latent
    ae_channels: tuple[int, ...] = (16, 32, 64)  # a narrow full-resolution level: it dominates the cost
    latent_channels: int = 4
    ae_layers_per_block: int = 1
    ae_norm_groups: int = 8  # group norm normalises each group per image: one channel per group erases brightness
    ae_steps: int = 450  # 7,200 images seen: ~9 CPU minutes at ~13 img/s (1 thread, bf16, idle core)
    ae_batch_size: int = 16  # small batches: more updates per image seen, which is what the budget buys
    ae_learning_rate: float = 1e-3
    kl_weight: float = 1e-6  # keeps latents near N(0, 1) without blurring (Rombach et al.)
    gradient_weight: float = 0.5  # L1 on image gradients: weighs ventricle and sulcus edges beside intensities
    # latent UNet
    channels: tuple[int, ...] = (32, 64, 128)  # 70 img/s on 1 thread vs 31 for (64, 128, 128): more steps
    layers_per_block: int = 1
    attention: bool = False  # self-attention at the lowest level: worth it on a GPU
    timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    train_steps: int = 600  # UNet optimizer steps: ~5 CPU minutes at ~64 img/s
    batch_size: int = 32
    learning_rate: float = 5e-4
    ema_decay: float = 0.0
    prediction_type: str = "epsilon"  # what the UNet predicts: "epsilon" (the noise), "v_prediction" or "sample"
    class_dropout: float = 0.0  # share of training steps' labels replaced by a "no class" label (classifier-free)
    guidance_scale: float = 1.0  # classifier-free guidance when varying: 1 is plain class-conditional denoising
    # both
    hflip: bool = True  # axial slices are near-symmetric: flips double the few images of small classes
    bf16: bool = True  # bfloat16 autocast: about 2x faster on this CPU, as accurate for both networks
    train_max_strength: float = 1.0  # UNet learns noise levels t < this * T only (SDEdit never goes further)
    strength: float = 0.5  # SDEdit: 0 returns the source's reconstruction, 1 ignores the source
    ddim_steps: int = 25  # sampler steps over the whole schedule (SDEdit runs strength * ddim_steps of them)
    sampler: str = "ddim"  # ddim, dpm++ or unipc (trained.SAMPLERS); with strength, steps, guidance: sampling only
    channels_last: bool = False  # sample on channels-last tensors (faster convolutions on the CPU); sampling only
    sample_batch: int = 64  # images per autoencoder call while sampling (8 keeps a CPU's caches warm); sampling only

    def __post_init__(self) -> None:
        for name in ("ae_channels", "channels"):
            object.__setattr__(self, name, tuple(int(c) for c in getattr(self, name)))
        factor = 2 ** (len(self.ae_channels) - 1)
        if not 1 <= len(self.ae_channels) <= 4:
            raise ValueError(f"ae_channels needs 1-4 levels (latent 128, 64, 32 or 16 px), got {self.ae_channels}")
        latent = IMAGE_SIZE // factor
        if latent % 2 ** (len(self.channels) - 1) or latent >> (len(self.channels) - 1) < 4:
            raise ValueError(f"a {latent} px latent is too small for {len(self.channels)} UNet levels; use fewer "
                             "channels entries or fewer ae_channels levels")
        if any(c % 8 for c in self.channels) or any(c % self.ae_norm_groups for c in self.ae_channels):
            raise ValueError(f"channels must be multiples of 8 and ae_channels multiples of ae_norm_groups "
                             f"({self.ae_norm_groups}) for group norm, got {self.channels} and {self.ae_channels}")
        check_sdedit_settings(self)
        if not 0 <= self.class_dropout < 1:
            raise ValueError(f"class_dropout must be in [0, 1), got {self.class_dropout}")
        if self.guidance_scale != 1 and not self.class_dropout:
            raise ValueError(f"guidance_scale {self.guidance_scale} needs an unconditional model: set class_dropout "
                             "> 0 (e.g. 0.1) or guidance_scale=1")
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {self.prediction_type!r}")
        counts = ("ae_steps", "ae_batch_size", "ae_norm_groups", "train_steps", "batch_size", "ddim_steps", "timesteps",
                  "sample_batch",
                  "latent_channels", "ae_layers_per_block", "layers_per_block")
        if bad := [n for n in counts if getattr(self, n) < 1]:
            raise ValueError(f"{', '.join(bad)} must be >= 1")

    @property
    def latent_size(self) -> int:
        """Height and width of the latent (128 over the autoencoder's downsampling)."""
        return IMAGE_SIZE // 2 ** (len(self.ae_channels) - 1)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "LatentDiffusionConfig":
        """The preset called ``name`` (one of ``PRESETS``) with ``overrides`` applied."""
        return pick_preset(cls, PRESETS, "latent diffusion", name, overrides)

    @classmethod
    def toy(cls, **overrides: Any) -> "LatentDiffusionConfig":
        """Seconds on a CPU: for tests and the quick profile; the images are not brain-like."""
        return replace(cls(ae_channels=(8, 16, 16), ae_norm_groups=2, latent_channels=2, ae_steps=30, ae_batch_size=8,
                           ae_learning_rate=1e-2, gradient_weight=0.0, channels=(16, 32), train_steps=30,
                           batch_size=16, learning_rate=1e-3, ddim_steps=10), **overrides)

    @classmethod
    def cpu(cls, **overrides: Any) -> "LatentDiffusionConfig":
        """The real-data CPU default: 17.96 CPU minutes on 1 thread (autoencoder 8.93, UNet 9.03) for the 1,536
        slices of a 30% subset, measured by ``benchmarks/latent_fidelity.py``; variations only (no fresh samples).

        Measured there (``results/latent_fidelity.md``; feature CNN trained 30 epochs on real held-out slices,
        accuracy 0.82): at strength 0.55 (chosen on the selection slices) FD 9.75 vs 192 for the pixel ``quick``
        preset (19.7x lower; real-vs-real floor 0.49), label fidelity 0.821 (floor 0.825), median SSIM to the source
        0.838 below the adjacent-slice 0.843 (46% of variations are closer to their source than its adjacent slice).
        Ventricles and the larger sulci are kept with their contrast; the cortical ribbon and fine sulci are softer
        than in the real slices. What changed from the first version (FD 1.37x below pixel): no clipping of DDIM's
        predicted latent (it shrank the latents), v-prediction, EMA, and classifier-free guidance 7 (guidance 1 ->
        7 at strength 0.6 on the selection slices: FD 13.8 -> 9.4, label fidelity 0.72 -> 0.80).
        """
        # SDEdit only (no time for the noisiest levels); v-prediction, EMA weights, classifier-free guidance
        return replace(cls(train_steps=1100, prediction_type="v_prediction", ema_decay=0.995, train_max_strength=0.7,
                           class_dropout=0.1, guidance_scale=7.0, strength=0.55), **overrides)

    @classmethod
    def cpu_fast(cls, **overrides: Any) -> "LatentDiffusionConfig":
        """``cpu``'s weights (the same training settings: the cache finds them), sampled faster: UniPC over 5 steps of
        the schedule (3 model evaluations at strength 0.55) instead of DDIM's 25 (14), channels-last tensors, and the
        autoencoder called on 8 images at a time. Measured against ``cpu`` side by side on two of the study's 30%
        subsets (``benchmarks/latent_sampler.py``, ``benchmarks/results/latent_sampler.md``)."""
        return cls.cpu(**{"sampler": "unipc", "ddim_steps": 5, "channels_last": True, "sample_batch": 8, **overrides})

    @classmethod
    def gpu(cls, **overrides: Any) -> "LatentDiffusionConfig":
        """Real size on a GPU: a wider autoencoder trained longer, attention in the UNet, EMA weights."""
        return replace(cls(ae_channels=(64, 128, 256), ae_layers_per_block=2, ae_steps=20_000, ae_batch_size=32,
                           ae_learning_rate=5e-4, channels=(128, 256, 256, 512), layers_per_block=2, attention=True,
                           train_steps=40_000, batch_size=64, learning_rate=2e-4, ema_decay=0.999,
                           ddim_steps=50), **overrides)
