"""`make demo` end to end, small: phantom data -> bank -> FPSM steps with DADAM -> metrics -> grid PNG.

The demo is ``examples/demo.py`` (it trains an FPSM, so it lives outside ``dadam``, which never imports ``fpsm``).
"""

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "demo.py"


def _load_demo():
    spec = importlib.util.spec_from_file_location("examples_demo", DEMO)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path):
    demo = _load_demo()
    out = demo.run_demo(tmp_path, device="cpu", canvas=64, backbone="resnet10t", steps=2, batch_size=8, n_images=48)
    assert out["images_per_s"] > 0 and out["patches"] > 0
    assert 0.0 <= out["AP"] <= 1.0
    n, rows = out["grid_images"], -(-out["grid_images"] // 4)
    assert 4 < n <= 16  # normals (pasted onto) and tail-class images (blended onto), up to 8 each
    with Image.open(tmp_path / "grid.png") as im:  # tiles of 64 px in 4 columns, torchvision's padding of 4
        assert im.size == (4 * 64 + 5 * 4, rows * 64 + (rows + 1) * 4)
    assert (tmp_path / "bank.safetensors").stat().st_size > 0
    assert sorted(p.name for p in (tmp_path / "run" / "eval").glob("*_report.md"))
    config = (tmp_path / "run" / "config.json").read_text()
    assert '"mode": "extend"' in config  # the run trained with the demo's DADAM options
    # a second `make demo` into the same folder replaces the demo's own phantom data
    again = demo.run_demo(tmp_path, device="cpu", canvas=64, backbone="resnet10t", steps=1, batch_size=8, n_images=48)
    assert again["grid_images"] == n


def test_demo_help():
    """`make demo` runs the script as a file, the way the Makefile does."""
    proc = subprocess.run([sys.executable, str(DEMO), "--help"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "usage: python examples/demo.py" in proc.stdout and "--canvas" in proc.stdout
    assert "examples/demo.py --out demo_out" in (ROOT / "Makefile").read_text()


def test_dadam_never_imports_fpsm():
    """Packages depend one way: fpsm uses dadam, dadam never uses fpsm (not even inside a function)."""
    offenders = []
    for path in sorted((ROOT / "dadam").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            offenders += [f"{path.relative_to(ROOT)}:{node.lineno}: {n}" for n in names if n.split(".")[0] == "fpsm"]
    assert offenders == []
    assert not (ROOT / "dadam" / "demo.py").exists()
