"""Test configuration: GPU tests skip without CUDA; real-data tests use the ``shared_data`` fixture; the synthetic
``bank``, ``table`` and ``stats`` most test modules share (a module that needs others defines its own, and ``stats``
then follows that module's ``table``)."""

import pathlib

import pytest
import torch

from dadam import LabelStats
from tests.helpers import SHARED_DATA, make_bank, make_label_table, require_shared_data, running_in_ci


def pytest_report_header(config) -> str:
    state = "found" if SHARED_DATA.is_dir() else "MISSING: its tests fail under CI=true and skip otherwise"
    return f"real test data: {SHARED_DATA} ({state}); CI={'yes' if running_in_ci() else 'no'}"


def pytest_collection_modifyitems(config, items):
    skip = None if torch.cuda.is_available() else pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "shared_data" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.real_data)
        if skip is not None and "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    """The real sample files (``shared/data`` next to the repository; see its README.md).

    Missing: the test fails with ``CI=true`` in the environment and is skipped otherwise, naming the folder.
    """
    return require_shared_data()


@pytest.fixture(scope="module")
def bank():
    """A synthetic patch bank (:func:`tests.helpers.make_bank`) on a 64-pixel canvas."""
    return make_bank(canvas=64)


@pytest.fixture(scope="module")
def table():
    """A 4000-row long-tailed label table (:func:`tests.helpers.make_label_table`)."""
    return make_label_table(4000)


@pytest.fixture(scope="module")
def stats(table):
    """The label statistics of the module's ``table``."""
    return LabelStats.from_labels(table)
