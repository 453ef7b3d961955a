"""tfsacnn: CNNs with and without self-attention for V1 system identification (Keras 3)."""
import os

from setuptools import find_packages, setup

# One TensorFlow wheel per environment: tensorflow-cpu, or with TFSACNN_GPU=1 the
# `tensorflow` wheel (an extra can only add packages, and the two wheels overwrite each
# other's files). GPU machines: TFSACNN_GPU=1 pip install -e '.[gpu]'
TENSORFLOW = "tensorflow" if os.environ.get("TFSACNN_GPU", "") not in ("", "0") else "tensorflow-cpu"

CORE = [
    "keras==3.15.1",
    "tensorboard==2.21.0",  # TF 2.21 no longer pulls it in
    "numpy>=1.26",
    "pandas>=2.0",
    "pyyaml>=6.0",
    "scipy>=1.11",
    "pillow>=10.0",
    "matplotlib>=3.8",
    "tqdm>=4.60",
]

setup(
    name="tfsacnn",
    version="0.1.0",
    description=__doc__,
    packages=find_packages(include=["tfsacnn", "tfsacnn.*", "data_prep", "data_prep.*"]),
    python_requires=">=3.10",
    install_requires=CORE + [f"{TENSORFLOW}==2.21.0"],
    extras_require={
        "gpu": ["tensorflow[and-cuda]==2.21.0"],   # the wheel and its CUDA libraries
        "parquet": ["pyarrow>=14"],
        "torch": ["torch==2.13.0"],
        "test": ["pytest>=8", "pyarrow>=14", "torch==2.13.0"],
    },
)
