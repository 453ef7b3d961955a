"""Shared pytest fixtures. The suite runs in one process (TF import is ~6 s)."""
import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_SAMPLE = REPO.parent / "shared" / "data" / "m1s1_val_responses_sample.npy"


@pytest.fixture(scope="session")
def real_sample():
    """Real responses of 10 M1S1 neurons to 1000 validation images, (1000, 10) float64."""
    if not SHARED_SAMPLE.exists():
        pytest.skip(f"{SHARED_SAMPLE} not present")
    return np.load(SHARED_SAMPLE, allow_pickle=False)
