"""Shared fixtures: the real dataset (CI points MRI_SYNTH_DATA at it) and the bundled sample.

``synthetic_people`` makes tiny sources of known people (chains of slices) for the people recovery and the audit.

The tests mirror the package (``tests/training/test_fit.py`` tests ``mri_synth/training/fit.py``); this file's
fixtures reach every sub-folder, and it puts ``tests/`` on ``sys.path`` so that they import the helper modules here
(``fake_openai_server``) by name.

Real-data tests fail in CI when the dataset is missing (CI=true); on a user's machine without it they are skipped
with a message that says how to point at a copy.
"""

import contextlib
import logging
import logging.handlers
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mri_synth import paths
from mri_synth.data.cache import load_data
from mri_synth.data.types import MRIData, Split

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:  # helper modules beside this file (fake_openai_server) for tests in every sub-folder
    sys.path.insert(0, str(TESTS))

SHARED_DATA = paths.PROJECT_ROOT.parent / "shared" / "data" / "alzheimer_mri"


def real_data_source() -> Path | None:
    env = os.environ.get("MRI_SYNTH_DATA")
    if env and Path(env).is_dir():
        return Path(env)
    return SHARED_DATA if SHARED_DATA.is_dir() else None


@pytest.fixture(scope="session")
def real_data_path() -> Path:
    source = real_data_source()
    if source is None:
        message = "the real dataset is missing: set MRI_SYNTH_DATA to a copy of Falah/Alzheimer_MRI in the hub's layout"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return source


@pytest.fixture(scope="session")
def real_data(real_data_path):
    return load_data(real_data_path)


@pytest.fixture(scope="session")
def sample_data():
    return load_data("sample")


def smooth_field(gen: torch.Generator, side: int = 32) -> torch.Tensor:
    coarse = torch.rand(1, 1, 8, 8, generator=gen)
    field = F.interpolate(coarse, size=(side, side), mode="bicubic", align_corners=True)[0, 0]
    return field - field.mean()


def make_synthetic_people(sizes, labels=None, seed=0, test_every=4) -> tuple[MRIData, np.ndarray, np.ndarray]:
    """People whose slices turn at an even pace between two random smooth fields; every 4th slice goes to test.

    Returns the data, each slice's true person and its true place along the person's chain (train first, then test).
    """
    gen = torch.Generator().manual_seed(seed)
    labels = labels if labels is not None else [p % 4 for p in range(len(sizes))]
    images, classes, person, place = [], [], [], []
    for p, (n, label) in enumerate(zip(sizes, labels)):
        u = smooth_field(gen)
        u = u / u.norm()
        v = smooth_field(gen)
        v = v - (v * u).sum() * u
        v = v / v.norm()
        for t in range(n):
            angle = 0.15 * t  # an even pace: slice t's nearest are t - 1 and t + 1, as along a real person
            image = 128 + 1500 * (np.cos(angle) * u + np.sin(angle) * v) + 0.5 * torch.randn(32, 32, generator=gen)
            images.append(image.clamp(0, 255).round().to(torch.uint8)[None])
            classes.append(label)
            person.append(p)
            place.append(t)
    images, classes = torch.stack(images), torch.tensor(classes)
    is_test = torch.arange(len(images)) % test_every == 1
    order = torch.cat([(~is_test).nonzero().flatten(), is_test.nonzero().flatten()])
    n_train = int((~is_test).sum())
    splits = [Split(images[i], classes[i], tuple(f"x/{k}" for k in i.tolist()))
              for i in (order[:n_train], order[n_train:])]
    data = MRIData(splits[0], splits[1], "synthetic", f"synthetic-{seed}-{len(sizes)}")
    return data, np.asarray(person)[order.numpy()], np.asarray(place)[order.numpy()]


@pytest.fixture
def synthetic_people():
    """``make_synthetic_people(sizes, labels=None, seed=0, test_every=4) -> (data, person, place)``."""
    return make_synthetic_people


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module's tests: exact comparisons and timing-free runs on a shared CPU."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def diffusers_log():
    """What diffusers logs inside ``with diffusers_log() as messages:``; its loggers do not propagate, so caplog
    and capfd see nothing of them."""
    @contextlib.contextmanager
    def collect():
        handler = logging.handlers.BufferingHandler(capacity=10_000)
        logger = logging.getLogger("diffusers")
        logger.addHandler(handler)
        messages: list[str] = []
        try:
            yield messages
        finally:
            logger.removeHandler(handler)
            messages.extend(record.getMessage() for record in handler.buffer)

    return collect
