"""Tests for dadam.labels: the CXR-LT class table and the source -> CXR-LT label mappings."""

from collections import Counter

import pytest

from dadam.labels import (
    CHESTX_DET_TO_CXR_LT,
    CHEXPERT_TO_CXR_LT,
    CXR_LT_CLASSES,
    CXR_LT_TRAIN_COUNTS,
    CXR_LT_TRAIN_IMAGES,
    DEFAULT_MAPPINGS,
    NIH_TO_CXR_LT,
    NO_FINDING,
    NUM_CLASSES,
    VINDR_TO_CXR_LT,
    check_mapping,
    class_index,
    map_labels,
)

# Label names as the datasets spell them (shared/data/README.md).
NIH_NAMES = [
    "No Finding", "Infiltration", "Effusion", "Atelectasis", "Nodule", "Mass", "Pneumothorax", "Consolidation",
    "Pleural_Thickening", "Cardiomegaly", "Emphysema", "Edema", "Fibrosis", "Pneumonia", "Hernia", "Infiltrate",
]  # fmt: skip
VINDR_NAMES = [
    "Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly", "Consolidation", "ILD", "Infiltration",
    "Lung Opacity", "Nodule/Mass", "Other lesion", "Pleural effusion", "Pleural thickening", "Pneumothorax",
    "Pulmonary fibrosis", "No finding",
]  # fmt: skip
CHESTX_DET_NAMES = [
    "Atelectasis", "Calcification", "Cardiomegaly", "Consolidation", "Diffuse Nodule", "Effusion", "Emphysema",
    "Fibrosis", "Fracture", "Mass", "Nodule", "Pleural Thickening", "Pneumothorax",
]  # fmt: skip


def test_class_table_contract():
    assert NUM_CLASSES == 26 == len(set(CXR_LT_CLASSES))
    assert CXR_LT_CLASSES[14] == NO_FINDING == "No Finding"
    assert list(CXR_LT_TRAIN_COUNTS) == list(CXR_LT_CLASSES)
    assert CXR_LT_TRAIN_IMAGES == 264849
    assert class_index("Pleural Effusion") == 16
    with pytest.raises(ValueError, match="unknown class 'Effusion'"):
        class_index("Effusion")


@pytest.mark.parametrize(
    ("table", "names"),
    [
        (NIH_TO_CXR_LT, NIH_NAMES),
        (VINDR_TO_CXR_LT, VINDR_NAMES),
        (CHESTX_DET_TO_CXR_LT, CHESTX_DET_NAMES),
        (CHEXPERT_TO_CXR_LT, [c for c in CXR_LT_CLASSES if c in CHEXPERT_TO_CXR_LT]),
    ],
)
def test_default_tables_cover_every_source_name_and_point_to_cxr_lt(table, names):
    check_mapping(table)  # every value is a CXR-LT class or None
    assert set(names) <= set(table)
    assert all(v is None or v in CXR_LT_CLASSES for v in table.values())


def test_documented_decisions():
    assert NIH_TO_CXR_LT["Effusion"] == "Pleural Effusion"
    assert NIH_TO_CXR_LT["Infiltrate"] == NIH_TO_CXR_LT["Infiltration"] == "Infiltration"
    assert NIH_TO_CXR_LT["Pleural_Thickening"] == "Pleural Thickening"
    assert VINDR_TO_CXR_LT["Pleural effusion"] == "Pleural Effusion"
    assert VINDR_TO_CXR_LT["Pulmonary fibrosis"] == VINDR_TO_CXR_LT["ILD"] == "Fibrosis"
    assert VINDR_TO_CXR_LT["Nodule/Mass"] == "Lung Lesion"
    assert VINDR_TO_CXR_LT["Aortic enlargement"] == "Enlarged Cardiomediastinum"
    assert VINDR_TO_CXR_LT["Other lesion"] is None
    assert VINDR_TO_CXR_LT["Calcification"] is None and CHESTX_DET_TO_CXR_LT["Calcification"] is None
    assert VINDR_TO_CXR_LT["No finding"] == NO_FINDING
    assert CHESTX_DET_TO_CXR_LT["Diffuse Nodule"] == "Nodule"
    assert CHESTX_DET_TO_CXR_LT["Effusion"] == "Pleural Effusion"
    assert len(CHEXPERT_TO_CXR_LT) == 14 and all(k == v for k, v in CHEXPERT_TO_CXR_LT.items())
    assert set(DEFAULT_MAPPINGS) == {"nih", "vindr", "chestx_det", "chexpert"}


def test_map_labels_matches_a_plain_loop_and_counts_unknown_and_excluded():
    names = ["Effusion", "Infiltrate", "Foo", "Infiltration", "Foo", " Mass ", "Bar", "Hernia"] * 3
    mapping = {**NIH_TO_CXR_LT, "Hernia": None}
    out, report = map_labels(names, mapping, source="nih")
    ref = [mapping.get(n.strip()) for n in names]
    assert out == ref
    assert report.unknown == {"Foo": 6, "Bar": 3}
    assert report.excluded == {"Hernia": 3}
    assert report.class_counts == dict(Counter(r for r in ref if r is not None))
    assert report.class_counts["Infiltration"] == 6


def test_map_labels_default_table_per_source():
    out, report = map_labels(["Nodule/Mass", "Other lesion", "Effusion"], source="vindr")
    assert out == ["Lung Lesion", None, None]
    assert report.excluded == {"Other lesion": 1} and report.unknown == {"Effusion": 1}


def test_map_labels_errors():
    with pytest.raises(ValueError, match=r"mapping\['Effusion'\] = 'Effusions' is not a CXR-LT class"):
        map_labels(["Effusion"], {"Effusion": "Effusions"}, source="nih")
    with pytest.raises(ValueError, match="source='padchest' has no default label mapping"):
        map_labels(["x"], source="padchest")
    with pytest.raises(TypeError, match="mapping must be a Mapping"):
        map_labels(["x"], [("x", "Mass")], source="nih")
    out, report = map_labels(["Tumour"], {"Tumour": "Mass"}, source="padchest")  # any source with a mapping
    assert out == ["Mass"] and report.class_counts == {"Mass": 1}
