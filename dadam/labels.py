"""The 26 CXR-LT 2023 classes and the mapping of each source dataset's label names onto them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = [
    "CHESTX_DET_TO_CXR_LT",
    "CHEXPERT_TO_CXR_LT",
    "CXR_LT_CLASSES",
    "CXR_LT_TRAIN_COUNTS",
    "CXR_LT_TRAIN_IMAGES",
    "DEFAULT_MAPPINGS",
    "LabelMapReport",
    "NIH_TO_CXR_LT",
    "NO_FINDING",
    "NUM_CLASSES",
    "VINDR_TO_CXR_LT",
    "check_mapping",
    "class_index",
    "map_labels",
    "resolve_mapping",
]

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


# ----------------------------------------------------------------------------------------------------------------------
# Source label name -> canonical CXR-LT name.
#
# Each table maps the label names a dataset ships (exactly as spelled in its files) to one of CXR_LT_CLASSES, or to
# None, which means "deliberately excluded": the name is known, but no CXR-LT class means the same thing, so rows with
# it are dropped and counted as *excluded* in the reader's report (a name missing from the table is counted as
# *unknown*). The tables are plain dicts: extend or override them by passing your own to any reader, e.g.
# ``read_vindr(csv, mapping={**VINDR_TO_CXR_LT, "Calcification": "Calcification of the Aorta"})``.
# Where a source class does not mean exactly one CXR-LT class, the comment next to the entry says what was decided
# and why.
# ----------------------------------------------------------------------------------------------------------------------

# NIH ChestX-ray14: Data_Entry_2017(_v2020).csv `Finding Labels` and BBox_List_2017.csv `Finding Label`.
NIH_TO_CXR_LT: dict[str, str | None] = {
    "Atelectasis": "Atelectasis",
    "Cardiomegaly": "Cardiomegaly",
    "Consolidation": "Consolidation",
    "Edema": "Edema",
    "Effusion": "Pleural Effusion",  # NIH means pleural effusion (CXR-LT took its class list partly from NIH).
    "Emphysema": "Emphysema",
    "Fibrosis": "Fibrosis",
    "Hernia": "Hernia",
    "Infiltration": "Infiltration",
    "Infiltrate": "Infiltration",  # BBox_List_2017.csv spells the class that Data_Entry calls `Infiltration` this way.
    "Mass": "Mass",
    "Nodule": "Nodule",
    "Pleural_Thickening": "Pleural Thickening",
    "Pneumonia": "Pneumonia",
    "Pneumothorax": "Pneumothorax",
    "No Finding": "No Finding",
}

# VinDr-CXR: `class_name` of train.csv (Kaggle, 14 box classes + `No finding`) and annotations_*.csv (PhysioNet 1.0,
# 22 local labels).
VINDR_TO_CXR_LT: dict[str, str | None] = {
    # VinDr boxes the dilated aortic arch/knob. A dilated aorta widens the mediastinal contour, which is what the
    # CheXpert/CXR-LT class `Enlarged Cardiomediastinum` describes; `Tortuous Aorta` is a change of shape (elongation,
    # kinking), not of calibre, so it is not used.
    "Aortic enlargement": "Enlarged Cardiomediastinum",
    "Atelectasis": "Atelectasis",
    # VinDr's `Calcification` is any calcification (granulomas, lymph nodes, pleura, costal cartilage, vessels), not
    # only the aortic wall. Mapping it to `Calcification of the Aorta` would paste granulomas under an aortic label, so
    # it is excluded. Override with {"Calcification": "Calcification of the Aorta"} for boxes you know lie on the aorta.
    "Calcification": None,
    "Cardiomegaly": "Cardiomegaly",
    "Consolidation": "Consolidation",
    # Interstitial lung disease shows on a radiograph as reticular/interstitial opacities, the pattern CXR-LT labels
    # `Fibrosis` (VinDr's `Pulmonary fibrosis` is the end stage of the same diseases). Not every ILD is fibrotic: set
    # {"ILD": None} to exclude it if that matters for your use.
    "ILD": "Fibrosis",
    "Infiltration": "Infiltration",
    "Lung Opacity": "Lung Opacity",
    # VinDr does not separate nodules (< 3 cm) from masses. CXR-LT's `Lung Lesion` (from the CheXpert labeller, whose
    # `Lung Lesion` phrases are "mass", "nodule", "lesion", ...) is the class that is true for both; picking `Nodule`
    # or `Mass` would be wrong for part of the boxes.
    "Nodule/Mass": "Lung Lesion",
    # A catch-all (bone lesions, foreign bodies, breast shadows, ...) with no CXR-LT meaning: excluded.
    "Other lesion": None,
    "Pleural effusion": "Pleural Effusion",
    "Pleural thickening": "Pleural Thickening",
    "Pneumothorax": "Pneumothorax",
    "Pulmonary fibrosis": "Fibrosis",
    "No finding": "No Finding",
    # Extra local labels of the PhysioNet release (annotations_train.csv / annotations_test.csv).
    "Clavicle fracture": "Fracture",
    "Rib fracture": "Fracture",
    "Edema": "Edema",
    "Emphysema": "Emphysema",
    "Lung cavity": "Lung Lesion",  # CheXpert's `Lung Lesion` includes cavitary lesions.
    "Lung cyst": None,  # thin-walled air spaces; no CXR-LT class (not a lesion in CheXpert's sense).
    "Enlarged PA": None,  # pulmonary artery enlargement; no CXR-LT class.
    "Mediastinal shift": None,  # a sign, not a finding class of CXR-LT.
}

# ChestX-Det / ChestX-Det10 (Deepwise): `syms` of the JSON files. The images are NIH ChestX-ray14 images.
CHESTX_DET_TO_CXR_LT: dict[str, str | None] = {
    "Atelectasis": "Atelectasis",
    # As for VinDr: ChestX-Det's `Calcification` boxes are mostly small calcified nodules/granulomas in the lung
    # fields, not the aortic wall, so it is excluded rather than called `Calcification of the Aorta`.
    "Calcification": None,
    "Cardiomegaly": "Cardiomegaly",
    "Consolidation": "Consolidation",
    # A region of many small nodules (miliary/metastatic pattern). Each box is a cluster of nodules, which CXR-LT labels
    # `Nodule` (its `Nodule` includes "multiple/innumerable nodules").
    "Diffuse Nodule": "Nodule",
    "Effusion": "Pleural Effusion",
    "Emphysema": "Emphysema",
    "Fibrosis": "Fibrosis",
    "Fracture": "Fracture",
    "Mass": "Mass",
    "Nodule": "Nodule",
    "Pleural Thickening": "Pleural Thickening",
    "Pneumothorax": "Pneumothorax",
}

# MIMIC-CXR-JPG mimic-cxr-2.0.0-chexpert.csv (and -negbio.csv): the 14 CheXpert labeller columns. All 14 are CXR-LT
# classes under the same name (CXR-LT 2023 extended this list with 12 more).
CHEXPERT_TO_CXR_LT: dict[str, str | None] = {
    name: name
    for name in (
        "Atelectasis",
        "Cardiomegaly",
        "Consolidation",
        "Edema",
        "Enlarged Cardiomediastinum",
        "Fracture",
        "Lung Lesion",
        "Lung Opacity",
        "No Finding",
        "Pleural Effusion",
        "Pleural Other",
        "Pneumonia",
        "Pneumothorax",
        "Support Devices",
    )
}

# Default table per source, used by map_labels (and the readers) when `mapping` is None.
DEFAULT_MAPPINGS: dict[str, dict[str, str | None]] = {
    "nih": NIH_TO_CXR_LT,
    "vindr": VINDR_TO_CXR_LT,
    "chestx_det": CHESTX_DET_TO_CXR_LT,
    "chexpert": CHEXPERT_TO_CXR_LT,
}


@dataclass
class LabelMapReport:
    """What :func:`map_labels` did with a list of source names.

    Attributes:
        source: The source dataset (a key of :data:`DEFAULT_MAPPINGS` or a name of your own).
        class_counts: Canonical CXR-LT name -> number of names mapped onto it.
        unknown: Source name -> count, for names that are not in the mapping.
        excluded: Source name -> count, for names that the mapping sends to None (deliberately excluded).
    """

    source: str
    class_counts: dict[str, int] = field(default_factory=dict)
    unknown: dict[str, int] = field(default_factory=dict)
    excluded: dict[str, int] = field(default_factory=dict)


def check_mapping(mapping: Mapping[str, str | None]) -> None:
    """Check that every value of ``mapping`` is a CXR-LT class name or None.

    Raises:
        TypeError: if ``mapping`` is not a mapping.
        ValueError: naming the first key whose value is not one of :data:`CXR_LT_CLASSES` or None.
    """
    if not isinstance(mapping, Mapping):
        raise TypeError(f"mapping must be a Mapping[str, str | None], got {type(mapping).__name__}")
    for key, value in mapping.items():
        if value is not None and value not in CXR_LT_CLASSES:
            raise ValueError(
                f"mapping[{key!r}] = {value!r} is not a CXR-LT class; expected None (excluded) or one of "
                f"{list(CXR_LT_CLASSES)}"
            )


def resolve_mapping(mapping: Mapping[str, str | None] | None, *, source: str) -> Mapping[str, str | None]:
    """The mapping to use: ``mapping`` (checked) or, when None, the default table of ``source``.

    Raises:
        ValueError: if ``mapping`` is None and ``source`` has no default table, or a value is not a CXR-LT class.
    """
    if mapping is None:
        if source not in DEFAULT_MAPPINGS:
            raise ValueError(
                f"source={source!r} has no default label mapping; pass mapping= or use one of {list(DEFAULT_MAPPINGS)}"
            )
        return DEFAULT_MAPPINGS[source]
    check_mapping(mapping)
    return mapping


def map_labels(
    names: Iterable[str], mapping: Mapping[str, str | None] | None = None, *, source: str
) -> tuple[list[str | None], LabelMapReport]:
    """Map source label names to canonical CXR-LT names, counting what could not be mapped.

    Names are matched exactly after stripping surrounding white space. Nothing is dropped silently: an unmapped name
    gives None in the output and is counted in ``report.unknown``; a name mapped to None is counted in
    ``report.excluded``.

    Args:
        names: Source label names, one per box or per image label.
        mapping: Source name -> CXR-LT name or None (excluded). None uses ``DEFAULT_MAPPINGS[source]``.
        source: The source dataset: "nih", "vindr", "chestx_det", "chexpert" (or any name when ``mapping`` is given).

    Returns:
        ``(canonical, report)``: one CXR-LT name or None per input name, and a :class:`LabelMapReport`.

    Raises:
        ValueError: if a mapping value is not a CXR-LT class, or ``source`` has no default table and no mapping is given.

    Example:
        >>> names, report = map_labels(["Effusion", "Infiltrate", "Foo"], source="nih")
        >>> names
        ['Pleural Effusion', 'Infiltration', None]
        >>> report.unknown
        {'Foo': 1}
    """
    table = resolve_mapping(mapping, source=source)
    out: list[str | None] = []
    counts: Counter[str] = Counter()
    unknown: Counter[str] = Counter()
    excluded: Counter[str] = Counter()
    for raw in names:
        name = str(raw).strip()
        if name not in table:
            unknown[name] += 1
            out.append(None)
            continue
        canonical = table[name]
        if canonical is None:
            excluded[name] += 1
        else:
            counts[canonical] += 1
        out.append(canonical)
    report = LabelMapReport(source=source, class_counts=dict(counts), unknown=dict(unknown), excluded=dict(excluded))
    return out, report
