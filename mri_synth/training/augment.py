"""Augmentation policies as batched transforms with an independent random draw for every image.

torchvision's v2 AutoAugment applied to a batch tensor draws ONE sub-policy for the whole batch, which would make
every image of a mini-batch share its augmentation (wrong for this study). Here each policy is split in two:

1. a *draw*, on the CPU from a ``torch.Generator`` (so it is reproducible), of one op and magnitude per image per
   step; the op tables and magnitude bins are torchvision's own (``AutoAugment`` ImageNet policy, ``RandAugment``,
   ``TrivialAugmentWide``);
2. an *apply*, on the batch's device, that runs each op once on the sub-batch of images that drew it, with a
   per-image magnitude. All geometric ops of a step (rotate, shear, translate) share one ``grid_sample`` with a
   per-image affine matrix (the same grid arithmetic as torchvision's ``affine``); AutoContrast, Equalize and
   Invert are torchvision's functional ops, which are per-image already; the magnitude ops (brightness, contrast,
   sharpness, posterize, solarize) are torchvision's formulas with a per-image factor (tests compare every op
   with torchvision's, image by image).

``PolicyAugment`` and ``BasicAugment`` expose the two halves as ``draw`` and ``apply``: ``stacked`` draws each
model's plan from its own generator and applies all plans to the K models' batches at once.

Policies (``POLICIES``, name -> factory; :func:`register_policy` adds one, and every list of policies in the
project, the study's arms and the training config's check included, is read from it):
    none            the images unchanged.
    basic           per image: horizontal flip (p=0.5); rotation U(-10, 10) degrees and shift U(-6, 6)% of the
                    side in x and y (bilinear, black fill); brightness and contrast factors U(0.9, 1.1).
    autoaugment     torchvision's AutoAugment, ImageNet policy (one of 25 two-op sub-policies per image).
    randaugment     torchvision's RandAugment defaults: 2 ops per image, magnitude 9 of 31.
    trivialaugment  torchvision's TrivialAugmentWide: 1 op per image, magnitude uniform over 31 bins.

"Color" (saturation) is the identity on single-channel images, as in torchvision. Images are uint8
``[N, 1, H, W]`` on any device; labels are never touched. Left to others: when to augment (``train``).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

Augment = Callable[[torch.Tensor, "torch.Generator | None"], torch.Tensor]
"""``(images, generator=None) -> images``: uint8 ``[N, 1, H, W]`` in, the same shape, dtype and device out."""

GEOMETRIC_OPS = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
_SHARPEN_KERNEL = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0


def _column(values: torch.Tensor) -> torch.Tensor:
    return values.view(-1, 1, 1, 1)


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    # torchvision's uint8 ops clamp and truncate (no rounding); keep that so results match it.
    return x.clamp_(0, 255).to(torch.uint8)


def inverse_affine_theta(angle: torch.Tensor, translate_x: torch.Tensor, translate_y: torch.Tensor,
                         shear_x: torch.Tensor, shear_y: torch.Tensor, center_x: torch.Tensor,
                         center_y: torch.Tensor) -> torch.Tensor:
    """Per-image inverse affine matrices ``[K, 2, 3]``: torchvision's ``_get_inverse_affine_matrix``, batched.

    Angles and shears in degrees, translations in pixels, centres relative to the image centre; scale is 1.
    """
    rot, sx, sy = (torch.deg2rad(t.double()) for t in (angle, shear_x, shear_y))
    a = torch.cos(rot - sy) / torch.cos(sy)
    b = -torch.cos(rot - sy) * torch.tan(sx) / torch.cos(sy) - torch.sin(rot)
    c = torch.sin(rot - sy) / torch.cos(sy)
    d = -torch.sin(rot - sy) * torch.tan(sx) / torch.cos(sy) + torch.cos(rot)
    m0, m1, m3, m4 = d, -b, -c, a
    cx, cy, tx, ty = (t.double() for t in (center_x, center_y, translate_x, translate_y))
    m2 = m0 * (-cx - tx) + m1 * (-cy - ty) + cx
    m5 = m3 * (-cx - tx) + m4 * (-cy - ty) + cy
    return torch.stack([m0, m1, m2, m3, m4, m5], dim=-1).view(-1, 2, 3).float()


def affine_batch(images: torch.Tensor, theta: torch.Tensor, mode: str = "nearest") -> torch.Tensor:
    """Warp uint8 images ``[K, 1, H, W]`` by per-image inverse matrices ``[K, 2, 3]``; black outside the image."""
    k, _, h, w = images.shape
    theta = theta.to(images.device)
    # torchvision's _affine_grid, with a batch of matrices instead of one.
    xs = torch.linspace((1.0 - w) * 0.5, (w - 1.0) * 0.5, w, device=images.device)
    ys = torch.linspace((1.0 - h) * 0.5, (h - 1.0) * 0.5, h, device=images.device)
    base = torch.stack([xs.expand(h, w), ys.unsqueeze(-1).expand(h, w), torch.ones(h, w, device=images.device)], -1)
    scaled = theta.transpose(1, 2) / torch.tensor([0.5 * w, 0.5 * h], device=images.device)
    grid = (base.view(1, h * w, 3) @ scaled).view(k, h, w, 2)
    out = F.grid_sample(images.float(), grid, mode=mode, padding_mode="zeros", align_corners=False)
    return out.round_().to(torch.uint8)


def _geometric(images: torch.Tensor, ops: list[str], magnitude: torch.Tensor) -> torch.Tensor:
    """Apply ShearX/Y, TranslateX/Y or Rotate (one per image, named in ``ops``) with AutoAugment's conventions."""
    h, w = images.shape[-2:]
    zeros = torch.zeros(len(ops), dtype=torch.float64)
    angle, tx, ty, shx, shy = (zeros.clone() for _ in range(5))
    cx, cy = zeros.clone(), zeros.clone()
    mag = magnitude.double().cpu()
    for i, op in enumerate(ops):
        if op == "Rotate":
            angle[i] = -mag[i]  # torchvision's rotate turns the other way from its affine
        elif op in ("ShearX", "ShearY"):
            # PIL-style shear about the top-left corner, by atan(magnitude) degrees.
            (shx if op == "ShearX" else shy)[i] = math.degrees(math.atan(mag[i]))
            cx[i], cy[i] = -w * 0.5, -h * 0.5
        else:
            (tx if op == "TranslateX" else ty)[i] = float(int(mag[i]))
    return affine_batch(images, inverse_affine_theta(angle, tx, ty, shx, shy, cx, cy))


def _blend(images: torch.Tensor, other: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    r = _column(ratio.float())
    return _to_uint8(images.float() * r + other * (1.0 - r))


def _sharpness(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    out = images.float()
    kernel = _SHARPEN_KERNEL.to(images.device).view(1, 1, 3, 3)
    degenerate = F.conv2d(out, kernel).round_()  # torchvision rounds the blur before blending
    inner = out[..., 1:-1, 1:-1]  # borders stay as they are, as in torchvision
    inner.add_((degenerate - inner) * _column(1.0 - factor.float()))
    return _to_uint8(out)


def apply_op(images: torch.Tensor, op: str, magnitude: torch.Tensor) -> torch.Tensor:
    """One non-geometric op on uint8 ``[K, 1, H, W]`` with a per-image ``magnitude`` ``[K]`` (AutoAugment's units)."""
    m = magnitude.to(images.device)
    if op in ("Identity", "Color"):  # saturation does nothing to a single channel
        return images
    if op == "Brightness":
        return _to_uint8(images.float() * _column(1.0 + m.float()))
    if op == "Contrast":
        mean = images.float().mean(dim=(-3, -2, -1), keepdim=True)
        return _blend(images, mean, 1.0 + m)
    if op == "Sharpness":
        return _sharpness(images, 1.0 + m)
    if op == "Posterize":
        bits = m.long()
        mask = (((1 << bits) - 1) << (8 - bits)).clamp(0, 255).to(torch.uint8)
        return images & _column(mask)
    if op == "Solarize":
        return torch.where(images.float() >= _column(255.0 * m.float()), 255 - images, images)
    if op == "AutoContrast":
        return TF.autocontrast(images)
    if op == "Equalize":
        return TF.equalize(images)
    if op == "Invert":
        return TF.invert(images)
    if op in GEOMETRIC_OPS:
        return _geometric(images, [op] * len(images), magnitude)
    raise ValueError(f"unknown augmentation op {op!r}")


Step = tuple[torch.Tensor, torch.Tensor]
"""One step of a plan: op index per image (``-1``: skip) and magnitude per image, both on the CPU."""


class PolicyAugment:
    """AutoAugment, RandAugment or TrivialAugmentWide with one independent draw per image.

    Call it as ``augment(images, generator)``: ``images`` uint8 ``[N, 1, H, W]`` on any device, ``generator`` a
    CPU ``torch.Generator`` (``None``: torch's global generator). ``draw`` and ``apply`` are the two halves.
    """

    def __init__(self, policy: str) -> None:
        if policy == "autoaugment":
            self._source = v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET)
            self._num_bins = 10
        elif policy == "randaugment":
            self._source = v2.RandAugment()  # 2 ops, magnitude 9 of 31 bins
            self._num_bins = self._source.num_magnitude_bins
        elif policy == "trivialaugment":
            self._source = v2.TrivialAugmentWide()
            self._num_bins = self._source.num_magnitude_bins
        else:
            raise ValueError(f"PolicyAugment handles autoaugment, randaugment, trivialaugment; got {policy!r}")
        self.policy = policy
        self.op_names = tuple(self._source._AUGMENTATION_SPACE)
        self._tables: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def _magnitude_table(self, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``[ops, bins]`` magnitudes (0 where an op has none) and ``[ops]`` signed flags, for one image size."""
        if (height, width) not in self._tables:
            rows, signed = [], []
            for fn, is_signed in self._source._AUGMENTATION_SPACE.values():
                values = fn(self._num_bins, height, width)
                rows.append(torch.zeros(self._num_bins) if values is None else values.double())
                signed.append(is_signed)
            self._tables[(height, width)] = (torch.stack(rows).double(), torch.tensor(signed))
        return self._tables[(height, width)]

    def _signed(self, magnitude: torch.Tensor, signed: torch.Tensor, generator: torch.Generator | None):
        flip = signed & (torch.rand(magnitude.shape, generator=generator) <= 0.5)
        return torch.where(flip, -magnitude, magnitude)

    def draw(self, n: int, height: int, width: int, generator: torch.Generator | None = None) -> list[Step]:
        """Draw every image's ops and magnitudes (on the CPU, so the same generator state gives the same plan)."""
        table, signed = self._magnitude_table(height, width)
        if self.policy == "autoaugment":
            subpolicies = self._source._policies
            index = {name: i for i, name in enumerate(self.op_names)}
            chosen = torch.randint(len(subpolicies), (n,), generator=generator)
            steps = []
            for slot in range(2):
                ops = torch.tensor([index[s[slot][0]] for s in subpolicies])[chosen]
                prob = torch.tensor([s[slot][1] for s in subpolicies])[chosen]
                bins = torch.tensor([s[slot][2] or 0 for s in subpolicies])[chosen]
                applied = torch.rand(n, generator=generator) <= prob
                magnitude = self._signed(table[ops, bins], signed[ops], generator)
                steps.append((torch.where(applied, ops, -1), magnitude))
            return steps
        num_steps = self._source.num_ops if self.policy == "randaugment" else 1
        steps = []
        for _ in range(num_steps):
            ops = torch.randint(len(self.op_names), (n,), generator=generator)
            if self.policy == "randaugment":
                bins = torch.full((n,), self._source.magnitude)
            else:
                bins = torch.randint(self._num_bins, (n,), generator=generator)
            steps.append((ops, self._signed(table[ops, bins], signed[ops], generator)))
        return steps

    def apply(self, images: torch.Tensor, plan: list[Step]) -> torch.Tensor:
        """Run a drawn plan on the batch's device: each op once, on the sub-batch of images that drew it."""
        out = images.clone()
        for ops, magnitude in plan:
            geometric = [i for i, name in enumerate(self.op_names) if name in GEOMETRIC_OPS]
            is_geo = torch.isin(ops, torch.tensor(geometric))
            if is_geo.any():
                rows = is_geo.nonzero().squeeze(1)
                names = [self.op_names[i] for i in ops[rows].tolist()]
                dev_rows = rows.to(images.device)
                out[dev_rows] = _geometric(out[dev_rows], names, magnitude[rows])
            for op in torch.unique(ops[~is_geo & (ops >= 0)]).tolist():
                rows = (ops == op).nonzero().squeeze(1)
                dev_rows = rows.to(images.device)
                out[dev_rows] = apply_op(out[dev_rows], self.op_names[op], magnitude[rows])
        return out

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_images(images)
        return self.apply(images, self.draw(len(images), images.shape[-2], images.shape[-1], generator))


class BasicAugment:
    """The ``basic`` policy: per-image flip, small rotation and shift, mild brightness and contrast jitter."""

    policy = "basic"

    def __init__(self, max_rotation: float = 10.0, max_shift: float = 0.06, jitter: float = 0.1) -> None:
        self.max_rotation = max_rotation  # degrees; head position varies a little between scans
        self.max_shift = max_shift  # fraction of the side; the brain is roughly centred in every slice
        self.jitter = jitter  # brightness/contrast factor range 1 +- jitter; scanner intensities vary mildly

    def draw(self, n: int, height: int, width: int,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
        """Every image's flip, angle, shifts, brightness and contrast factors (CPU tensors ``[n]``)."""

        def uniform(bound: float) -> torch.Tensor:
            return (torch.rand(n, generator=generator, dtype=torch.float64) * 2 - 1) * bound

        flip = torch.rand(n, generator=generator) < 0.5
        angle, tx, ty = uniform(self.max_rotation), uniform(self.max_shift * width), uniform(self.max_shift * height)
        return flip, angle, tx, ty, 1 + uniform(self.jitter), 1 + uniform(self.jitter)

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_images(images)
        return self.apply(images, self.draw(len(images), images.shape[-2], images.shape[-1], generator))

    def apply(self, images: torch.Tensor, plan: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Run a drawn plan (``draw``) on the batch's device; each image is transformed by its own draw."""
        flip, angle, tx, ty, brightness, contrast = plan
        n = len(images)
        out = torch.where(_column(flip.to(images.device)), images.flip(-1), images)
        zeros = torch.zeros(n, dtype=torch.float64)
        theta = inverse_affine_theta(angle, tx, ty, zeros, zeros, zeros, zeros)
        out = affine_batch(out, theta, mode="bilinear")
        out = _to_uint8(out.float() * _column(brightness.float().to(images.device)))
        return _blend(out, out.float().mean(dim=(-3, -2, -1), keepdim=True), contrast.to(images.device))


def _identity(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    _check_images(images)
    return images


def _check_images(images: torch.Tensor) -> None:
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(
            f"augmentation expects a uint8 batch [N, C, H, W], got {images.dtype} {tuple(images.shape)}; "
            "augment the uint8 images before ModelSpec.prepare turns them into floats"
        )


POLICIES: dict[str, Callable[[], Augment]] = {
    "none": lambda: _identity,
    "basic": lambda: BasicAugment(),
    "autoaugment": lambda: PolicyAugment("autoaugment"),
    "randaugment": lambda: PolicyAugment("randaugment"),
    "trivialaugment": lambda: PolicyAugment("trivialaugment"),
}
"""Policy name -> a factory of its batched augmentation, in the order the study lists them."""


def register_policy(name: str, factory: Callable[[], Augment]) -> None:
    """Add an augmentation policy (or replace one): it becomes an arm of the study and a ``TrainConfig.augment``."""
    if not name.isidentifier():
        raise ValueError(f"a policy name must be an identifier (it is an arm name), got {name!r}")
    POLICIES[name] = factory


def make_augment(policy: str) -> Augment:
    """The batched augmentation for a policy name (see ``POLICIES``).

    Returns:
        A callable ``(images, generator=None) -> images``: uint8 ``[N, 1, H, W]`` on any device in, the same
        shape, dtype and device out, with an independent random draw for every image.

    Raises:
        ValueError: unknown policy name.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown augmentation policy {policy!r}; choose one of {', '.join(POLICIES)}")
    return POLICIES[policy]()
