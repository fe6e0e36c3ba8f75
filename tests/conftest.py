"""Shared fixtures: the real dataset (CI points MRI_SYNTH_DATA at it) and the bundled sample.

Real-data tests fail in CI when the dataset is missing (CI=true); on a user's machine without it they are skipped
with a message that says how to point at a copy.
"""

import os
from pathlib import Path

import pytest

from mri_synth import paths
from mri_synth.data import load_data

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
