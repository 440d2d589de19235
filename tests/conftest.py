"""Test configuration: GPU tests skip without CUDA; real-data tests use the ``shared_data`` fixture."""

import pathlib

import pytest
import torch

from tests.helpers import SHARED_DATA, require_shared_data, running_in_ci


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
