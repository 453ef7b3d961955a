"""Real M1S1 responses shipped with the package (provenance in README.md beside this file)."""
from importlib import resources

import numpy as np

SAMPLE = "m1s1_val_responses_sample.npy"


def real_sample():
    """Real responses of 10 M1S1 neurons to 1000 validation images: (1000, 10) float64."""
    with resources.as_file(resources.files(__name__) / SAMPLE) as path:
        return np.load(path, allow_pickle=False)
