"""`make demo` end to end, small: phantom data -> bank -> FPSM steps with DADAM -> metrics -> grid PNG."""

import pytest
from PIL import Image

from dadam.demo import main, run_demo


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path):
    out = run_demo(tmp_path, device="cpu", canvas=64, backbone="resnet10t", steps=2, batch_size=8, n_images=48)
    assert out["images_per_s"] > 0 and out["patches"] > 0
    assert 0.0 <= out["AP"] <= 1.0
    n, rows = out["grid_images"], -(-out["grid_images"] // 4)
    assert 4 < n <= 16  # normals (pasted onto) and tail-class images (blended onto), up to 8 each
    with Image.open(tmp_path / "grid.png") as im:  # tiles of 64 px in 4 columns, torchvision's padding of 4
        assert im.size == (4 * 64 + 5 * 4, rows * 64 + (rows + 1) * 4)
    assert (tmp_path / "bank.safetensors").stat().st_size > 0
    assert sorted(p.name for p in (tmp_path / "run" / "eval").glob("*_report.md"))


def test_demo_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "--canvas" in capsys.readouterr().out
