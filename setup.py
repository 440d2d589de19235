"""dadam-fpsm: online Diseased Area Data Augmentation (DADAM) and the Feature Pyramid Sum Model (FPSM)."""

import pathlib

from setuptools import find_packages, setup

DALI = ["nvidia-dali-cuda130"]
DICOM = ["pydicom"]

setup(
    name="dadam-fpsm",
    version="0.1.0",
    description="Online diseased-area augmentation (DADAM) and feature-pyramid-sum models (FPSM) for chest X-rays",
    long_description=(pathlib.Path(__file__).parent / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["dadam", "dadam.*", "fpsm", "fpsm.*"]),
    # torch is not pinned: users bring the CUDA build that matches their machine.
    install_requires=[
        "torch>=2.4",
        "torchvision",
        "timm>=1.0",
        "kornia>=0.8",
        "torchmetrics",
        "safetensors",
        "scipy",
        "numpy",
        "pandas",
        "pillow",
        "tqdm",
        "matplotlib",
    ],
    extras_require={
        "dali": DALI,
        "dicom": DICOM,
        "dev": [
            "pytest",
            "pytest-timeout",
            "hypothesis",
            "scikit-learn",
            "ruff",
            "tensorboard",
            *DALI,
            *DICOM,
        ],
    },
)
