"""The benchmarks package: the CLI end to end (tiny config), the JSON schema and chart, and its building blocks."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest
import torch

from benchmarks import groups, inputs, peers, report, results, timing
from benchmarks.config import make_config
from benchmarks.throughput import main
from dadam import DiseasedAreaAugment, LabelStats
from dadam.labels import CXR_LT_CLASSES, NO_FINDING
from dadam.sampling import MODE_PASTE, DadamParams

ROOT = pathlib.Path(__file__).resolve().parents[1]
NF = CXR_LT_CLASSES.index(NO_FINDING)


@pytest.fixture(scope="module")
def setup128():
    bank = inputs.synthetic_bank(128, seed=0)
    pool = inputs.synthetic_label_pool(4096, seed=0)
    aug = DiseasedAreaAugment(bank, LabelStats.from_labels(pool), p=1.0, max_patches=4, generator=0)
    return bank, pool, aug


def test_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "python -m benchmarks.throughput" in out
    for flag in ("--device", "--batch", "--size", "--json", "--png", "--quick", "--tiny", "--compile", "--threads"):
        assert flag in out


def test_the_script_runs_as_a_file_from_another_folder(tmp_path):
    # only dadam on the path: the script must find its own package without the repository root on sys.path
    (tmp_path / "dadam").symlink_to(ROOT / "dadam")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    script = ROOT / "benchmarks" / "throughput.py"
    res = subprocess.run(
        [sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env
    )
    assert res.returncode == 0, res.stderr
    assert "--threads" in res.stdout and "usage: python -m benchmarks.throughput" in res.stdout


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
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without CUDA")
def test_cuda_without_a_gpu_is_rejected(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--device", "cuda"])
    assert exc.value.code == 2
    assert "--device cuda but torch.cuda.is_available() is False" in capsys.readouterr().err


def test_synthetic_bank_covers_every_disease_class_with_plausible_sizes():
    bank = inputs.synthetic_bank(448, per_class=3, seed=1)
    counts = bank.class_counts()
    assert counts[NO_FINDING] == 0
    assert all(counts[c] == 3 for c in CXR_LT_CLASSES if c != NO_FINDING)
    sides = bank.sizes.float() / 448
    assert float(sides.min()) >= 0.049 and float(sides.max()) <= 0.301
    assert bool(((bank.boxes[:, 2:] <= 448) & (bank.boxes[:, :2] >= 0)).all())
    assert torch.equal(bank.boxes[:, 2:] - bank.boxes[:, :2], bank.sizes.flip(1))  # boxes (x, y) match (h, w) sizes


def test_label_batch_has_the_requested_mix(setup128):
    _, pool, aug = setup128
    y = inputs.benchmark_labels(50, aug.tail_mask, seed=3, pool=pool)
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
    y = inputs.benchmark_labels(16, aug.tail_mask, seed=5, pool=pool)
    g = torch.Generator().manual_seed(0)
    if dtype == torch.uint8:
        x = torch.randint(0, 256, (16, 3, 128, 128), generator=g, dtype=torch.uint8)
    else:
        x = torch.rand(16, 3, 128, 128, generator=g).to(dtype)
    ref_x, ref_y, params = aug(x, y, return_params=True)
    assert bool((params.mode == 1).any()) and bool((params.mode == 2).any())  # pastes and blends both exercised
    patches = [bank.patch(i) for i in range(len(bank))]
    out_x, out_y = peers.naive_paste_loop(x, y, params, patches)
    assert torch.equal(out_x, ref_x)
    assert torch.equal(out_y, ref_y)
    assert not torch.equal(out_x, x)  # something was pasted
    # the comparison can fail: another blend weight gives other pixels
    other = DadamParams(**{**params.__dict__, "alpha": torch.where(params.alpha < 1, 0.3, params.alpha)})
    assert not torch.equal(peers.naive_paste_loop(x, y, other, patches)[0], ref_x)


def test_time_call_counts_and_budget():
    calls = []
    times = timing.time_call(lambda: calls.append(1), device="cpu", warmup=2, repeats=4)
    assert len(times) == 4 and len(calls) == 6 and all(t > 0 for t in times)
    times = timing.time_call(lambda: sum(range(20000)), device="cpu", warmup=0, repeats=50, budget_s=0.0)
    assert len(times) == 2  # stops at the budget, after 2 runs
    with pytest.raises(ValueError, match="repeats and inner must be >= 1"):
        timing.time_call(lambda: None, device="cpu", repeats=0)


def test_time_interleaved_alternates_the_calls():
    order = []
    timing.time_interleaved({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, device="cpu", repeats=3)
    assert order == ["a", "a", "b", "b"] + ["a", "b"] * 3  # warm-up and one run each, then one of each per round


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts glibc's fresh mappings")
def test_page_faults_tell_a_fresh_output_from_a_reused_one():
    x = torch.rand(2**24)  # 64 MiB, over glibc's largest mmap threshold: every clone gets fresh pages
    calls = peers.roofline_calls(x)
    fresh = timing.page_faults(calls["clone"], device="cpu")
    reused = timing.page_faults(calls["reused copy"], device="cpu")
    assert fresh >= 0.9 * x.numel() * 4 / 4096 and reused < 100
    assert calls["reused copy"]().data_ptr() == calls["reused copy"]().data_ptr()
    assert torch.equal(calls["reused copy"](), x) and torch.equal(calls["clone"](), x)
    assert timing.page_faults(calls["clone"], device="meta") is None


def test_quick_cpu_config_leaves_out_large_float32():
    cfg = make_config(device="cpu", quick=True)
    assert (32, 3, "float32") in cfg.configs and (64, 1, "uint8") in cfg.configs
    assert all(b < 256 for b, _, dt in cfg.configs if dt == "float32")
    full = make_config(device="cpu", quick=False)
    assert (256, 1, "uint8") in full.configs and (256, 3, "float32") not in full.configs
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda', got 'tpu'"):
        make_config(device="tpu", quick=True)
    with pytest.raises(ValueError, match=r"skip names groups from .*, got \['everything'\]"):
        make_config(device="cpu", quick=True, skip=["everything"])


def test_unavailable_says_why():
    assert peers.unavailable("torch") is None
    assert peers.unavailable("no_such_module_anywhere") == "no_such_module_anywhere not installed"


def test_missing_peer_is_a_skip_not_a_crash(monkeypatch):
    monkeypatch.setitem(sys.modules, "dadam.offline", None)  # import dadam.offline -> ImportError
    cfg = make_config(device="cpu", quick=True, tiny=True, progress=False)
    rows = groups.offline_group(cfg)
    assert len(rows) == 2
    assert all(r.status.startswith("skipped: dadam.offline not importable") for r in rows)
    assert all(r.images_per_s is None for r in rows)


def _row(name, rate, *, group="augment", times=(1.0, 1.0), **extra):
    return results.Result(
        name, group, rate, batch=8, shape=[1, 64, 64], dtype="uint8", times_s=list(times), extra=dict(extra)
    )


def test_rows_above_the_roofline_are_flagged_with_their_reason():
    clone = _row(
        "clone (memory roofline)",
        100.0,
        group="roofline",
        times=(1.0, 1.1),
        page_faults_per_call=1000,
        reused_copy_images_per_s=400.0,
    )
    below = _row("DADAM", 90.0)
    pooled = _row("DALI fn.multi_paste (CPU pipeline)", 200.0, page_faults_per_call=3)
    noise = _row("DADAM replay (params given)", 105.0, page_faults_per_call=1000)
    missing = _row("something fast", 300.0, page_faults_per_call=1000)
    rows = [below, clone, pooled, noise, missing]
    results.add_ratios(rows)
    assert "above_roofline" not in below.extra and below.extra["fraction_of_roofline"] == pytest.approx(0.9)
    assert pooled.extra["above_roofline"].startswith("its output memory is reused between calls (3 page faults")
    assert "50% of a copy into a reused buffer" in pooled.extra["above_roofline"]
    assert noise.extra["above_roofline"].startswith("within the clone's run-to-run spread (10%)")
    assert "work is missing from the timed call" in missing.extra["above_roofline"]
    table = report.format_table(rows, [])
    line = next(line for line in table.splitlines() if line.startswith("DALI"))
    assert "200.0% !" in line and "ABOVE THE ROOFLINE: its output memory is reused" in line
    assert "ABOVE" not in next(line for line in table.splitlines() if line.startswith("DADAM "))
    assert missing.to_json()["above_roofline"] == missing.extra["above_roofline"]


def test_dali_multi_paste_measures_the_same_work(setup128):
    pytest.importorskip("nvidia.dali")
    bank, pool, aug = setup128
    y = inputs.benchmark_labels(6, aug.tail_mask, seed=2, pool=pool)
    for dtype in ("uint8", "float32"):
        x = inputs.image_batch(6, 3, dtype, 128, seed=1)
        params = aug.sample(y)
        runner = peers.DaliMultiPaste(x, params, [bank.patch(i) for i in range(len(bank))], device=x.device, threads=1)
        pipe = runner.pipe
        assert (pipe.num_threads, pipe.prefetch_queue_depth, pipe.exec_async, pipe.exec_pipelined) == (
            1,
            1,
            False,
            False,
        )
        out = runner()
        assert isinstance(out, torch.Tensor) and out.shape == (6, 128, 128, 3)  # handed over as a torch tensor
        rows = params.mode == MODE_PASTE
        assert bool(rows.any())
        assert torch.equal(runner.output()[rows], aug.apply(x, params)[rows])
        assert not torch.equal(runner.output()[rows], x[rows])


@pytest.mark.slow
def test_tiny_run_writes_table_json_and_png(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "-m", "benchmarks.throughput", "--tiny", "--quick", "--device", "cpu", "--threads", "1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run(
        [*cmd, "--no-progress", "--json", str(out)], capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "targets:" in res.stdout and "naive per-sample loop" in res.stdout

    doc = json.loads(out.read_text())
    assert isinstance(doc["device"], str) and "cores" in doc["device"]
    assert doc["date"][:4].isdigit() and doc["versions"]["torch"] == torch.__version__
    rows = doc["results"]
    names = {r["name"] for r in rows}
    for name in (
        "DADAM",
        "DADAM replay (params given)",
        "clone (memory roofline)",
        "naive per-sample loop",
        "kornia RandomCutMixV2",
        "kornia RandomMixUpV2",
        "offline reference (per image, PNG write)",
        "offline export() end to end",
    ):
        assert name in names
    assert any(n.startswith("FPSM step") for n in names) and any(n.startswith("JPEG ->") for n in names)
    for r in rows:
        assert {"name", "images_per_s", "batch", "shape", "dtype", "status"} <= set(r)
        if r["status"] == "ok":
            assert r["images_per_s"] > 0 and r["runs"] >= 1
        else:
            assert r["status"].startswith("skipped: ") and r["images_per_s"] is None, r
        fraction = r.get("fraction_of_roofline")
        assert ("above_roofline" in r) == (fraction is not None and fraction > 1), r
    by_key = {(r["name"], r["batch"], tuple(r["shape"]), r["dtype"]): r for r in rows}
    dadam = [r for r in rows if r["name"] == "DADAM"]
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
        assert clone["reused_copy_images_per_s"] > 0 and clone["page_faults_per_call"] >= 0
    cutmix = by_key[("kornia RandomCutMixV2", 8, (1, 128, 128), "uint8")]
    assert cutmix["status"] == "skipped: kornia mixes float images only"
    offline = by_key[("offline reference (per image, PNG write)", 1, (1, 128, 128), "uint8")]
    assert offline["equal_to_dadam"] is True and offline["bytes_per_image"] > 0
    assert offline["extrapolated_disk_gb"] == pytest.approx(offline["bytes_per_image"] * 1e5 / 1e9)
    export = by_key[("offline export() end to end", 1, (1, 128, 128), "uint8")]
    assert export["status"] == "ok" and export["images_written"] == 3
    checks = {t["name"]: t for t in doc["targets"]}
    assert checks["naive loop output == DADAM output"]["pass"] is True
    assert any(name.startswith("DADAM vs naive loop") for name in checks)

    png = out.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sampler_group_rows_and_target():
    from benchmarks.sampler import sampler_group

    cfg = make_config(device="cpu", quick=True, tiny=True, progress=False)
    cfg.sampler_rows, cfg.repeats = 5000, 2
    rows = sampler_group(cfg)
    kernel_row = "DADAM sampler (cooccurrence, Triton kernel)"
    assert [r.name for r in rows] == ["DADAM sampler (cooccurrence)", "DADAM sampler (correlation)", kernel_row]
    assert rows.pop().status == "skipped: no CUDA"
    for r in rows:
        assert r.status == "ok" and r.group == "sampler" and r.batch == 5000 and r.extra["label_rows"] == 5000
        assert r.extra["seconds_per_100k_rows"] == pytest.approx(r.extra["seconds"] * 20)
        assert r.images_per_s == pytest.approx(5000 / r.extra["seconds"])
    checks = results.check_targets(rows, "cpu")
    assert [c["name"] for c in checks] == [f"{r.name}: seconds per 100k label rows" for r in rows]
    assert all(c["op"] == "<=" and c["target"] == 3.0 for c in checks)
    assert "5000 label rows in" in report.format_table(rows, checks)
    cfg.skip = ("sampler",)
    assert all(r.status == "skipped: --skip sampler" for r in sampler_group(cfg))


def test_gpu_check_dadam_step_records_host_and_device_time_and_the_summary_shows_them(tmp_path, capsys):
    from benchmarks import gpu_check

    assert gpu_check.main(["dadam", "--cpu-smoke", "--out", str(tmp_path)]) == 0
    case = json.loads((tmp_path / "dadam.json").read_text())["cases"]["uint8_1ch"]
    for mode in ("out_of_place", "in_place", "feather_match"):
        assert case[mode]["host_us_per_call"] > 0 and case[mode]["us_per_call"] > 0
    assert case["profile_out_of_place"]["device_us"] == 0  # no CUDA kernels on the CPU
    assert gpu_check.main(["summary", "--out", str(tmp_path)]) == 0
    summary = (tmp_path / "summary.txt").read_text()
    assert "per call (us): events time / host time issuing it / device time" in summary
    rows = [line.split() for line in summary.splitlines() if line.startswith("  uint8_1ch ")]
    assert [r[1] for r in rows] == ["out_of_place", "in_place"] and all(len(r) == 5 for r in rows), rows
    assert "MISS  float32_3ch out of place >= 0.8 of the clone" in summary  # the CPU loop is far below the GPU target
