"""The shared test helpers themselves: where the real test data is looked for and what happens when it is missing."""

import pytest

from tests.helpers import SHARED_DATA, require_shared_data, running_in_ci


@pytest.mark.parametrize("value", ["true", "TRUE", "1", "yes"])
def test_missing_real_data_fails_under_ci(tmp_path, monkeypatch, value):
    monkeypatch.setenv("CI", value)
    assert running_in_ci()
    missing = tmp_path / "shared" / "data"
    with pytest.raises(pytest.fail.Exception, match=r"real test data not found: .*shared/data is missing.*CI is set"):
        require_shared_data(missing)


@pytest.mark.parametrize("value", [None, "", "false", "0", "no"])
def test_missing_real_data_skips_outside_ci(tmp_path, monkeypatch, value):
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    assert not running_in_ci()
    with pytest.raises(pytest.skip.Exception, match=r"real test data not found: .*nowhere is missing"):
        require_shared_data(tmp_path / "nowhere")


def test_present_real_data_is_returned(tmp_path, monkeypatch):
    monkeypatch.setenv("CI", "true")
    assert require_shared_data(tmp_path) == tmp_path
    assert SHARED_DATA.name == "data" or SHARED_DATA.is_absolute()
