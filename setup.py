"""tfsacnn: CNNs with and without self-attention for V1 system identification (Keras 3)."""
from setuptools import find_packages, setup

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
    install_requires=CORE + ["tensorflow-cpu==2.21.0"],
    extras_require={
        # GPU machines: `pip install -e .[gpu]` then, for CUDA libraries, `pip install tensorflow[and-cuda]==2.21.0`.
        "gpu": ["tensorflow==2.21.0"],
        "parquet": ["pyarrow>=14"],
        "torch": ["torch==2.13.0"],
        "test": ["pytest>=8", "pyarrow>=14", "torch==2.13.0"],
    },
)
