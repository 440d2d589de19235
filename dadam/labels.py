"""The 26 CXR-LT 2023 classes and the mapping of each source dataset's label names onto them."""

from __future__ import annotations

__all__ = ["CXR_LT_CLASSES", "CXR_LT_TRAIN_COUNTS", "NO_FINDING", "NUM_CLASSES", "class_index"]

# The official CXR-LT 2023 column order (train.csv / development.csv after `path`).
CXR_LT_CLASSES: tuple[str, ...] = (
    "Atelectasis",
    "Calcification of the Aorta",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Enlarged Cardiomediastinum",
    "Fibrosis",
    "Fracture",
    "Hernia",
    "Infiltration",
    "Lung Lesion",
    "Lung Opacity",
    "Mass",
    "No Finding",
    "Nodule",
    "Pleural Effusion",
    "Pleural Other",
    "Pleural Thickening",
    "Pneumomediastinum",
    "Pneumonia",
    "Pneumoperitoneum",
    "Pneumothorax",
    "Subcutaneous Emphysema",
    "Support Devices",
    "Tortuous Aorta",
)
NUM_CLASSES = len(CXR_LT_CLASSES)
NO_FINDING = "No Finding"

# Positive counts per class in the CXR-LT 2023 train split (264,849 images).
CXR_LT_TRAIN_COUNTS: dict[str, int] = {
    "Atelectasis": 67597,
    "Calcification of the Aorta": 4361,
    "Cardiomegaly": 76900,
    "Consolidation": 16038,
    "Edema": 38574,
    "Emphysema": 4255,
    "Enlarged Cardiomediastinum": 30119,
    "Fibrosis": 1158,
    "Fracture": 11883,
    "Hernia": 4049,
    "Infiltration": 10218,
    "Lung Lesion": 2533,
    "Lung Opacity": 79931,
    "Mass": 5529,
    "No Finding": 41869,
    "Nodule": 7663,
    "Pleural Effusion": 69240,
    "Pleural Other": 675,
    "Pleural Thickening": 3369,
    "Pneumomediastinum": 788,
    "Pneumonia": 48093,
    "Pneumoperitoneum": 543,
    "Pneumothorax": 14983,
    "Subcutaneous Emphysema": 2453,
    "Support Devices": 89140,
    "Tortuous Aorta": 3499,
}
CXR_LT_TRAIN_IMAGES = 264849


def class_index(name: str) -> int:
    """Index of a canonical class name in :data:`CXR_LT_CLASSES`.

    Raises:
        ValueError: if ``name`` is not one of the 26 CXR-LT classes.
    """
    try:
        return CXR_LT_CLASSES.index(name)
    except ValueError:
        raise ValueError(f"unknown class {name!r}; expected one of {list(CXR_LT_CLASSES)}") from None
