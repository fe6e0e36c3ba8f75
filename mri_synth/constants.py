"""The dataset's fixed facts, in one leaf module that imports nothing: its classes and its image size.

Every layer (data loading, models, generators, Grad-CAM) reads these from here, so no module needs the data loader
just to know how many classes there are. Loading, sampling and caching the images are left to :mod:`mri_synth.data`.
"""

from __future__ import annotations

CLASS_NAMES: tuple[str, ...] = ("Mild_Demented", "Moderate_Demented", "Non_Demented", "Very_Mild_Demented")
"""Class names in the hub's label-id order: 0 Mild, 1 Moderate, 2 Non, 3 Very mild (``Falah/Alzheimer_MRI``)."""

NUM_CLASSES: int = len(CLASS_NAMES)
"""Number of classes, the width of every classifier's output and of the diffusion model's class embedding."""

IMAGE_SIZE: int = 128
"""Height and width in pixels of every image the study stores, real or synthetic (grayscale, one channel)."""
