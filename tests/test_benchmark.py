"""benchmarks/throughput.py: the CLI end to end (tiny config), the JSON schema and chart, and its building blocks."""

from __future__ import annotations

import importlib.util
import json
import pathlib
import subprocess
import sys

import pytest
import torch

from dadam import DiseasedAreaAugment, LabelStats
from dadam.labels import CXR_LT_CLASSES, NO_FINDING

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "throughput.py"
NF = CXR_LT_CLASSES.index(NO_FINDING)


def _load_module():
    spec = importlib.util.spec_from_file_location("throughput_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


T = _load_module()


@pytest.fixture(scope="module")
def setup128():
    bank = T.synthetic_bank(128, seed=0)
    pool = T.synthetic_label_pool(4096, seed=0)
    aug = DiseasedAreaAugment(bank, LabelStats.from_labels(pool), p=1.0, max_patches=4, generator=0)
    return bank, pool, aug


def test_help(capsys):
    with pytest.raises(SystemExit) as exc:
        T.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--device", "--batch", "--size", "--json", "--png", "--quick", "--tiny", "--compile", "--threads"):
        assert flag in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--batch", "0", "--device", "cpu"], "--batch sizes must be >= 1, got [0]"),
        (["--size", "8", "--device", "cpu"], "--size must be >= 16, got 8"),
        (["--threads", "0", "--device", "cpu"], "--threads must be >= 1, got 0"),
        (["--skip", "everything"], "invalid choice: 'everything'"),
    ],
)
def test_bad_arguments_are_rejected(capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        T.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without CUDA")
def test_cuda_without_a_gpu_is_rejected(capsys):
    with pytest.raises(SystemExit) as exc:
        T.main(["--device", "cuda"])
    assert exc.value.code == 2
    assert "--device cuda but torch.cuda.is_available() is False" in capsys.readouterr().err


def test_synthetic_bank_covers_every_disease_class_with_plausible_sizes():
    bank = T.synthetic_bank(448, per_class=3, seed=1)
    counts = bank.class_counts()
    assert counts[NO_FINDING] == 0
    assert all(counts[c] == 3 for c in CXR_LT_CLASSES if c != NO_FINDING)
    sides = bank.sizes.float() / 448
    assert float(sides.min()) >= 0.049 and float(sides.max()) <= 0.301
    assert bool(((bank.boxes[:, 2:] <= 448) & (bank.boxes[:, :2] >= 0)).all())


def test_label_batch_has_the_requested_mix(setup128):
    _, pool, aug = setup128
    y = T.benchmark_labels(50, aug.tail_mask, seed=3, pool=pool)
    assert y.shape == (50, len(CXR_LT_CLASSES))
    normal = (y[:, NF] == 1) & (y.sum(1) == 1)
    tail = ((y > 0.5) & aug.tail_mask[None]).any(1) & ~normal
    assert int(normal.sum()) == 20  # 40 %
    assert int(tail.sum()) == 15  # 30 %
    # every abnormal row has a disease class and no "No Finding"
    assert bool(((y[~normal].sum(1) >= 1) & (y[~normal, NF] == 0)).all())


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.float16])
def test_naive_loop_equals_dadam_on_the_same_params(setup128, dtype):
    bank, pool, aug = setup128
    y = T.benchmark_labels(16, aug.tail_mask, seed=5, pool=pool)
    g = torch.Generator().manual_seed(0)
    if dtype == torch.uint8:
        x = torch.randint(0, 256, (16, 3, 128, 128), generator=g, dtype=torch.uint8)
    else:
        x = torch.rand(16, 3, 128, 128, generator=g).to(dtype)
    ref_x, ref_y, params = aug(x, y, return_params=True)
    assert bool((params.mode == 1).any()) and bool((params.mode == 2).any())  # pastes and blends both exercised
    patches = [bank.patch(i) for i in range(len(bank))]
    out_x, out_y = T.naive_paste_loop(x, y, params, patches)
    assert torch.equal(out_x, ref_x)
    assert torch.equal(out_y, ref_y)
    assert not torch.equal(out_x, x)  # something was pasted
    # the comparison can fail: another blend weight gives other pixels
    other = T.DadamParams(**{**params.__dict__, "alpha": torch.where(params.alpha < 1, 0.3, params.alpha)})
    assert not torch.equal(T.naive_paste_loop(x, y, other, patches)[0], ref_x)


def test_time_call_counts_and_budget():
    calls = []
    times = T.time_call(lambda: calls.append(1), device="cpu", warmup=2, repeats=4)
    assert len(times) == 4 and len(calls) == 6 and all(t > 0 for t in times)
    times = T.time_call(lambda: sum(range(20000)), device="cpu", warmup=0, repeats=50, budget_s=0.0)
    assert len(times) == 2  # stops at the budget, after 2 runs
    with pytest.raises(ValueError, match="repeats and inner must be >= 1"):
        T.time_call(lambda: None, device="cpu", repeats=0)


def test_quick_cpu_config_leaves_out_large_float32():
    cfg = T.make_config(device="cpu", quick=True)
    assert (32, 3, "float32") in cfg.configs and (64, 1, "uint8") in cfg.configs
    assert all(b < 256 for b, _, dt in cfg.configs if dt == "float32")
    full = T.make_config(device="cpu", quick=False)
    assert (256, 1, "uint8") in full.configs and (256, 3, "float32") not in full.configs
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda', got 'tpu'"):
        T.make_config(device="tpu", quick=True)


def test_missing_peer_is_a_skip_not_a_crash(monkeypatch):
    monkeypatch.setitem(sys.modules, "dadam.offline", None)  # import dadam.offline -> ImportError
    cfg = T.make_config(device="cpu", quick=True, tiny=True, progress=False)
    results = []

    class Bar:
        def set_description(self, _):
            pass

        def update(self, n=1):
            pass

    T._offline_group(cfg, Bar(), results)
    assert len(results) == 2
    assert all(r.status.startswith("skipped: dadam.offline not importable") for r in results)
    assert all(r.images_per_s is None for r in results)


@pytest.mark.slow
def test_tiny_run_writes_table_json_and_png(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, str(SCRIPT), "--tiny", "--quick", "--device", "cpu", "--threads", "1", "--no-progress"]
    res = subprocess.run([*cmd, "--json", str(out)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "targets:" in res.stdout and "naive per-sample loop" in res.stdout

    doc = json.loads(out.read_text())
    assert isinstance(doc["device"], str) and "cores" in doc["device"]
    assert doc["date"][:4].isdigit() and doc["versions"]["torch"] == torch.__version__
    results = doc["results"]
    names = {r["name"] for r in results}
    for name in (
        "DADAM",
        "DADAM replay (params given)",
        "clone (memory roofline)",
        "naive per-sample loop",
        "kornia RandomCutMixV2",
        "kornia RandomMixUpV2",
        "offline reference (per image, PNG write)",
    ):
        assert name in names
    assert any(n.startswith("FPSM step") for n in names) and any(n.startswith("JPEG ->") for n in names)
    for r in results:
        assert {"name", "images_per_s", "batch", "shape", "dtype", "status"} <= set(r)
        if r["status"] == "ok":
            assert r["images_per_s"] > 0 and r["runs"] >= 1
        else:
            assert r["status"].startswith("skipped: ") and r["images_per_s"] is None, r
    by_key = {(r["name"], r["batch"], tuple(r["shape"]), r["dtype"]): r for r in results}
    dadam = [r for r in results if r["name"] == "DADAM"]
    assert {(r["shape"][0], r["dtype"]) for r in dadam} == {(3, "float32"), (1, "uint8")}
    for r in dadam:
        assert r["shape"] == [r["shape"][0], 128, 128] and r["batch"] == 8
        assert 0 < r["mean_active_patches"] <= 4 and 1 <= r["mean_active_patches_normal"] <= 4
        key = (r["batch"], tuple(r["shape"]), r["dtype"])
        naive = by_key[("naive per-sample loop", *key)]
        assert naive["equal_to_dadam"] is True
        assert r["speed_vs_naive_loop"] == pytest.approx(r["images_per_s"] / naive["images_per_s"])
        clone = by_key[("clone (memory roofline)", *key)]
        assert r["fraction_of_roofline"] == pytest.approx(r["images_per_s"] / clone["images_per_s"])
    cutmix = by_key[("kornia RandomCutMixV2", 8, (1, 128, 128), "uint8")]
    assert cutmix["status"] == "skipped: kornia mixes float images only"
    offline = by_key[("offline reference (per image, PNG write)", 1, (1, 128, 128), "uint8")]
    assert offline["equal_to_dadam"] is True and offline["bytes_per_image"] > 0
    assert offline["extrapolated_disk_gb"] == pytest.approx(offline["bytes_per_image"] * 1e5 / 1e9)
    checks = {t["name"]: t for t in doc["targets"]}
    assert checks["naive loop output == DADAM output"]["pass"] is True
    assert any(name.startswith("DADAM vs naive loop") for name in checks)

    png = out.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
