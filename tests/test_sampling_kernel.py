"""The co-occurrence sampler's Triton kernel (``dadam.kernels.sampler``) against the torch rule it follows.

On CPU tensors the kernel runs under Triton's interpreter (the same source, one program at a time): given the same
uniforms its params must equal :func:`dadam.sampling.cooccurrence_params` field for field (that torch function is
itself checked against a slow per-sample reference in ``tests/test_sampling.py``). Also here: the CDF rule both
follow, the ``ok`` word, the backend choice and its fallback and the launch count (on fake CUDA tensors), the PTX
for sm_90 (compiled on the CPU), and, marked ``gpu``, the compiled kernel on CUDA.
"""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

import dadam.sampling.backend as sampler_backend_module
from dadam import LabelStats, PatchBank
from dadam.config import DadamConfig
from dadam.labels import CXR_LT_CLASSES, NO_FINDING
from dadam.sampling import build_tables, cooccurrence_params, cooccurrence_uniforms, sample_batch, sampler_backend
from dadam.sampling.backend import draw_params
from dadam.sampling.draws import sequential_cdf
from tests.helpers import NF, fake_cuda, make_bank, make_label_table

triton = pytest.importorskip("triton")
kernel = pytest.importorskip("dadam.kernels.sampler")

CANVAS = 64
FIELDS = ("boxes", "patch_ids", "classes", "active", "alpha", "mode", "changed", "labels", "template", "dropped")
LARGEST_BELOW_ONE = 1.0 - 2.0**-24  # the largest float32 uniform


@pytest.fixture(scope="module")
def table():
    return make_label_table(3000, seed=5)


@pytest.fixture(scope="module")
def bank():
    return make_bank(canvas=CANVAS, max_size=28, seed=1)  # large patches: some template classes find no room


def _labels(table: torch.Tensor, n: int, *, seed: int) -> torch.Tensor:
    """A third each of normal images, images showing a tail class and random rows, with unknowns, plus the corner
    cases: no positive at all, "No Finding" with unknowns, every label unknown."""
    g = torch.Generator().manual_seed(seed)
    tails = [CXR_LT_CLASSES.index(c) for c in ("Fibrosis", "Hernia", "Pneumoperitoneum")]
    normal = ((table > 0.5).sum(1) == 1) & (table[:, NF] > 0.5)  # (N,)
    pools = [normal.nonzero().flatten(), (table[:, tails] > 0.5).any(1).nonzero().flatten(), torch.arange(len(table))]
    rows = torch.cat([pool[torch.randint(0, len(pool), (n,), generator=g)] for pool in pools])  # (3n,)
    y = table[rows[torch.randperm(3 * n, generator=g)[:n]]].clone()  # (n, 26)
    y[torch.rand(n, 26, generator=g) < 0.04] = float("nan")
    if n >= 3:
        y[0] = 0.0
        y[1] = float("nan")
        y[1, NF] = 1.0
        y[2] = float("nan")
    return y


def _uniforms(config: DadamConfig, n: int, *, seed: int, extreme: bool = False):
    """The rule's uniforms; ``extreme``: about a third of them replaced by 0, the largest float32 below 1, 0.5 and
    values whose jitter lands on a half pixel (rounding ties)."""
    spec = cooccurrence_uniforms(config)
    u = spec.draw(n, generator=torch.Generator().manual_seed(seed), device="cpu")
    if extreme:
        g = torch.Generator().manual_seed(seed + 1)
        shift = config.jitter * CANVAS
        ties = [((k + 0.5) / shift + 1) / 2 for k in range(-int(shift), int(shift))] if shift else []
        values = torch.tensor([0.0, LARGEST_BELOW_ONE, 0.5, *ties])
        pick = torch.rand(u.raw.shape, generator=g) < 0.35  # (n, columns)
        u.raw[pick] = values[torch.randint(0, len(values), (int(pick.sum()),), generator=g)]
    return spec, u


def _assert_same(got, want, where=""):
    for name in FIELDS:
        a, b = getattr(got, name), getattr(want, name)
        assert a.dtype == b.dtype and a.shape == b.shape and a.device == b.device, f"{where}{name}"
        same = torch.equal(a.nan_to_num(-7.0), b.nan_to_num(-7.0)) if a.is_floating_point() else torch.equal(a, b)
        if not same:
            bad = (a != b) & ~(a.isnan() & b.isnan()) if a.is_floating_point() else a != b
            raise AssertionError(f"{where}{name} differs at {bad.nonzero()[:5].tolist()}")


def _assert_kernel_equals_torch(labels, tables, config, *, seed, mask=None, extreme=False, ok=None, lungs=None):
    spec, u = _uniforms(config, len(labels), seed=seed, extreme=extreme)
    want = cooccurrence_params(labels, u, tables, config, mask, lungs)
    got = draw_params(
        labels, u, spec, cooccurrence_params, tables, config, mask=mask, ok=ok, backend="triton", lung_boxes=lungs
    )
    _assert_same(got, want)
    return got


def _lung_boxes(n: int, *, seed: int, nan_every: int = 7) -> torch.Tensor:
    """``(n, 4)`` lung boxes: random sizes and places, every ``nan_every``-th unknown, a few tiny ones, some filling
    the canvas and some whose corners land on half pixels (rounding ties)."""
    g = torch.Generator().manual_seed(seed)
    lo = torch.rand(n, 2, generator=g) * 0.5
    lungs = torch.cat([lo, (lo + 0.01 + torch.rand(n, 2, generator=g) * 0.6).clamp(max=1.0)], 1)  # (n, 4)
    lungs[::nan_every] = float("nan")
    lungs[1::nan_every] = torch.tensor([0.0, 0.0, 1.0, 1.0])
    lungs[2::nan_every] = torch.tensor([0.97, 0.0, 0.98, 0.01])  # tiny, at the top right
    lungs[3::nan_every] = torch.tensor([0.25, 0.125, 0.75, 0.625])  # binary fractions: exact centres, ties likely
    return lungs


# ------------------------------------------------------------------------------------ interpreter: the kernel's values

OPTIONS = [
    dict(p=0.8, max_patches=3, candidates=8),
    dict(p=1.0, max_patches=1, candidates=1),
    dict(p=1.0, max_patches=2, candidates=1, jitter=0.25),
    dict(p=0.6, max_patches=4, candidates=3, jitter=0.1, soft_label=True),
    dict(p=1.0, max_patches=4, candidates=8, alpha=0.35, soft_label=True, jitter=0.5),
    dict(p=1.0, max_patches=3, candidates=5, tail=("Fibrosis", "Mass")),
]


@pytest.mark.parametrize("case", range(len(OPTIONS)))
def test_kernel_equals_the_torch_rule_given_the_same_uniforms(bank, stats, table, case):
    config = DadamConfig(**OPTIONS[case])
    tables, _ = build_tables(bank, stats, config)
    labels = _labels(table, 45, seed=case)  # 45: the last program of 16 samples is partly empty
    mask = (torch.rand(90, generator=torch.Generator().manual_seed(case)) < 0.7)[::2] if case % 2 else None  # strided
    got = _assert_kernel_equals_torch(labels, tables, config, seed=100 + case, mask=mask, extreme=case >= 2)
    assert (got.mode == 1).sum() >= 5 and (got.mode == 2).sum() >= 1, "too few pastes and blends to test"
    if mask is not None:
        assert not got.changed[~mask].any()
    if config.max_patches > 1:
        assert got.active[:, 1:].any(), "no companion placed: the slots were not exercised"
    if config.max_patches in (2, 3):  # with 4 slots these patches mostly all fit
        assert got.dropped.any(), "no template class dropped: the overlap test was not exercised"


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(8))
def test_kernel_equals_the_torch_rule_on_random_options(bank, stats, table, seed):
    rng = np.random.default_rng(seed)
    config = DadamConfig(
        p=float(rng.choice([0.3, 0.9, 1.0])),
        alpha=float(rng.uniform(0.05, 1.0)),
        max_patches=int(rng.integers(1, 5)),
        candidates=int(rng.integers(1, 10)),
        jitter=float(rng.choice([0.0, 0.05, 0.3, 1.0])),
        soft_label=bool(rng.integers(0, 2)),
        gamma=float(rng.uniform(0, 3)),
    )
    tables, _ = build_tables(bank, stats, config)
    mask = torch.from_numpy(rng.random(70) < 0.8)
    _assert_kernel_equals_torch(
        _labels(table, 70, seed=seed), tables, config, seed=seed, mask=mask, extreme=bool(seed % 2)
    )


LUNG_OPTIONS = [
    dict(p=0.9, max_patches=3, candidates=8),
    dict(p=1.0, max_patches=4, candidates=3, jitter=0.2, soft_label=True),
    dict(p=1.0, max_patches=2, candidates=1, jitter=0.5),
]


def _lung_case(bank, stats, case):
    """``(config, tables, generator)`` of LUNG_OPTIONS[case] with placement="lung", over ``bank`` with random donor
    lung boxes, some small (anchors beyond [0, 1], clamped to [-2, 3]); the generator that drew them, for more."""
    g = torch.Generator().manual_seed(case)
    lo = torch.rand(len(bank), 2, generator=g) * 0.6
    lung_bank = bank.with_lung_boxes(torch.cat([lo, lo + 0.02 + torch.rand(len(bank), 2, generator=g) * 0.38], 1))
    config = DadamConfig(**LUNG_OPTIONS[case], placement="lung")
    return config, build_tables(lung_bank, stats, config)[0], g


@pytest.mark.parametrize("case", range(len(LUNG_OPTIONS)))
def test_kernel_equals_the_torch_rule_with_lung_placement(bank, stats, table, case):
    config, tables, g = _lung_case(bank, stats, case)  # the recipients' lung boxes: _lung_boxes
    assert not torch.isnan(tables.patch_anchor).any() and (tables.patch_anchor.abs() > 1).any()
    labels = _labels(table, 45, seed=20 + case)
    lungs = _lung_boxes(45, seed=30 + case)
    mask = (torch.rand(45, generator=g) < 0.8) if case == 1 else None
    got = _assert_kernel_equals_torch(labels, tables, config, seed=40 + case, mask=mask, extreme=case > 0, lungs=lungs)
    aligned = cooccurrence_params(
        labels,
        _uniforms(config, 45, seed=40 + case, extreme=case > 0)[1],
        tables,
        config.replace(placement="aligned"),
        mask,
    )
    moved = (got.boxes != aligned.boxes).any(-1) & got.active  # (B, K)
    assert moved.sum() >= 10, "the lung placement moved too few boxes to test"
    known = ~torch.isnan(lungs).all(1)
    assert not moved[~known].any()  # unknown lung boxes keep the aligned boxes


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_label_dtypes_and_strides(bank, stats, table, dtype):
    # alpha 0.35 is not exact in any of them: the soft label is float32 alpha cast to the labels' dtype
    config = DadamConfig(p=1.0, max_patches=3, alpha=0.35, soft_label=True)
    tables, _ = build_tables(bank, stats, config)
    labels = _labels(table, 20, seed=7).to(dtype).t().contiguous().t()  # column-major (B, C)
    assert labels.stride() == (1, 20)
    got = _assert_kernel_equals_torch(labels, tables, config, seed=8)
    assert got.labels.is_contiguous() and (got.mode == 2).any()


def test_weights_whose_sums_depend_on_the_order(bank, stats, table):
    # Tail and companion weights over 40 binary orders of magnitude: float32 partial sums lose the small ones, so
    # only the same addition order (float64, class by class) gives the same classes.
    config = DadamConfig(p=1.0, max_patches=2, tail=("Fibrosis", "Hernia", "Mass", "Nodule"))
    tables, _ = build_tables(bank, stats, config)
    g = torch.Generator().manual_seed(3)
    scale = 2.0 ** torch.randint(-20, 21, (26,), generator=g).float()
    tables = tables._replace(
        tail_weight=tables.tail_weight * scale,
        blend_tail_weight=tables.blend_tail_weight * scale.flip(0),
        companion_weight=tables.companion_weight * scale,
    )
    labels = _labels(table, 40, seed=9)
    _assert_kernel_equals_torch(labels, tables, config, seed=10, extreme=True)


def test_the_cdf_rounding_decides_the_class(bank, stats):
    # Tail weights 2**24, 1, 1 on classes a < b < c: the float64 running sums round to 2**24, 2**24, 2**24 + 2
    # (float32 sums would stay at 2**24), so u = the largest float32 below 1 (v = 2**24) draws c, not a.
    config = DadamConfig(p=1.0, max_patches=1)
    tables, _ = build_tables(bank, stats, config)
    a, b, c = [i for i in range(26) if int(bank.class_count[i]) > 0 and i != NF][:3]
    weights = torch.zeros(26)
    weights[[a, b, c]] = torch.tensor([2.0**24, 1.0, 1.0])
    tables = tables._replace(tail_weight=weights)
    labels = torch.zeros(3, 26)
    labels[:, NF] = 1.0  # normal images: t ~ tail_weight
    spec = cooccurrence_uniforms(config)
    u = spec.split(torch.tensor([[0.0] * spec.columns, [0.5] * spec.columns, [LARGEST_BELOW_ONE] * spec.columns]))
    want = cooccurrence_params(labels, u, tables, config)
    got = draw_params(labels, u, spec, cooccurrence_params, tables, config, backend="triton")
    _assert_same(got, want)
    assert got.classes[:, 0].tolist() == [a, a, c]


def test_thirty_two_classes_use_every_bit():
    # class 31 (the sign bit of the int32 row masks) is covered, a tail class and in template rows
    names = (NO_FINDING, *(f"c{i}" for i in range(1, 32)))
    g = torch.Generator().manual_seed(0)
    patches = [torch.randint(0, 256, (6, 6), generator=g, dtype=torch.uint8) for _ in range(6)]
    boxes = [[4 * i, 4 * i, 4 * i + 6, 4 * i + 6] for i in range(6)]
    bank = PatchBank.from_patches(
        patches, boxes, ["c31", "c31", "c30", "c5", "c1", "c17"], canvas=32, class_names=names
    )
    table = (torch.rand(500, 32, generator=g) < 0.15).float()
    table[:100] = 0.0
    table[:100, 0] = 1.0  # normal rows
    table[100:200, 31] = 1.0
    config = DadamConfig(p=1.0, max_patches=4, tail=("c31", "c30"))
    tables, _ = build_tables(bank, LabelStats.from_labels(table, class_names=names), config)
    labels = table[torch.randint(0, 500, (40,), generator=g)]
    labels[:10] = table[:10]
    got = _assert_kernel_equals_torch(labels, tables, config, seed=1)
    assert (got.classes == 31).any() and bool((got.labels[got.mode == 1, 31] == 1).any())


def test_empty_batch(bank, stats, table):
    config = DadamConfig(max_patches=3)
    tables, _ = build_tables(bank, stats, config)
    got = _assert_kernel_equals_torch(table[:0], tables, config, seed=0)
    assert got.boxes.shape == (0, 3, 4) and got.labels.shape == (0, 26)


def test_ok_word_is_cleared_by_bad_labels_only(bank, stats, table):
    config = DadamConfig(p=1.0)
    tables, _ = build_tables(bank, stats, config)
    good = _labels(table, 6, seed=11)  # 0, 1 and NaN
    for bad_value in (0.5, -1.0, 2.0, float("inf"), None):
        labels = good.clone()
        if bad_value is not None:
            labels[3, 20] = bad_value
        for backend in ("torch", "triton"):
            ok = torch.ones(1, dtype=torch.int32)
            sample_batch(labels, tables, config, generator=torch.Generator().manual_seed(0), ok=ok, backend=backend)
            assert int(ok) == (bad_value is None), (bad_value, backend)
    ok = torch.full((1,), 7, dtype=torch.int32)  # the kernel only ever stores 0
    sample_batch(good, tables, config, ok=ok, backend="triton")
    assert int(ok) == 7


def test_sample_batch_on_the_kernel_draws_the_torch_params(bank, stats, table):
    config = DadamConfig(p=0.9, max_patches=3, jitter=0.2)
    tables, _ = build_tables(bank, stats, config)
    labels, mask = _labels(table, 30, seed=12), torch.rand(30, generator=torch.Generator().manual_seed(2)) < 0.5
    a, b = (
        sample_batch(labels, tables, config, generator=torch.Generator().manual_seed(4), mask=mask, backend=backend)
        for backend in ("torch", "triton")
    )
    _assert_same(b, a)


# ------------------------------------------------------------------------------------------------ the CDF rule


def test_sequential_cdf_is_a_float64_running_sum_in_class_order():
    g = torch.Generator().manual_seed(0)
    w = (torch.rand(300, 26, generator=g) * 2.0 ** torch.randint(-30, 31, (300, 26), generator=g)).float()
    w[w < 1e-6] = 0.0
    cdf = sequential_cdf(w)
    rows = w.double().tolist()
    for b in range(0, 300, 7):  # slow reference: Python floats are float64
        acc, ref = 0.0, []
        for v in rows[b]:
            acc += v
            ref.append(acc)
        assert torch.equal(cdf[b], torch.tensor(ref, dtype=torch.float64).float()), b
    float32_sums = torch.stack([w[:, : c + 1].sum(1) for c in range(26)], 1)  # another order, float32
    assert not torch.equal(cdf, float32_sums), "the weights do not tell the addition orders apart"
    assert sequential_cdf(w.half().float()).dtype == torch.float32


# ------------------------------------------------------------------------------------------- backends and errors


def test_backend_choice_and_errors(bank, stats, table, monkeypatch):
    assert str(sampler_backend("cpu")) == "torch (CPU tensors: the kernel runs on CUDA)"
    assert sampler_backend("cuda", "correlation") == ("torch", "companions='correlation' has no kernel")
    config = DadamConfig()
    tables, _ = build_tables(bank, stats, config)
    labels = table[:4]

    def no_kernel(*args, **kwargs):
        raise AssertionError("the kernel ran")

    monkeypatch.setattr(kernel, "cooccurrence_triton", no_kernel)
    sample_batch(labels, tables, config)  # auto on the CPU: the torch rule
    with pytest.raises(AssertionError, match="the kernel ran"):
        sample_batch(labels, tables, config, backend="triton")
    with pytest.raises(ValueError, match=r"backend must be one of \('auto', 'torch', 'triton'\), got 'cuda'"):
        sample_batch(labels, tables, config, backend="cuda")
    corr = DadamConfig(companions="correlation")
    corr_tables, _ = build_tables(bank, stats, corr)
    with pytest.raises(ValueError, match="backend='triton' cannot draw these params: companions='correlation' has"):
        sample_batch(labels, corr_tables, corr, backend="triton")
    with pytest.raises(ValueError, match="labels of dtype torch.int64"):
        sample_batch(labels.long(), tables, config, backend="triton")
    for bad, what in (
        (torch.ones(1), r"got shape \(1,\), dtype torch.float32"),
        (torch.ones(2, dtype=torch.int32), r"got shape \(2,\)"),
        (1, "got int"),
    ):
        with pytest.raises(ValueError, match=r"ok must be a \(1,\) torch.int32 tensor .*" + what):
            sample_batch(labels, tables, config, ok=bad)
    with pytest.raises(
        ValueError, match=r"sampler tables are on meta, the labels on cpu: .*tables.to\(labels.device\)"
    ):
        sample_batch(labels, tables._replace(**{k: v.to("meta") for k, v in tables.tensors().items()}), config)
    with pytest.raises(ValueError, match="ok is on meta, the labels on cpu"):
        sample_batch(labels, tables, config, ok=torch.ones(1, dtype=torch.int32, device="meta"))


def test_sampling_on_the_cpu_does_not_import_triton():
    code = (
        "import sys, torch\n"
        "from dadam import DiseasedAreaAugment, LabelStats\n"
        "from tests.helpers import make_bank, make_label_table\n"
        "table = make_label_table(500)\n"
        "DiseasedAreaAugment(make_bank(), LabelStats.from_labels(table), generator=0).sample(table[:64])\n"
        "assert 'triton' not in sys.modules, 'triton was imported'\n"
    )
    root = pathlib.Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def _fake_cuda_tables(tables):
    # FakeTensorMode has no pinned memory: plain copies (SamplerTables.to pins them on a real GPU)
    return tables._replace(**{k: v.to("cuda") for k, v in tables.tensors().items()})


@pytest.fixture
def fresh_backend(monkeypatch):
    """No kernel launched or failed yet in this process (restored afterwards)."""
    monkeypatch.setattr(sampler_backend_module, "_FAILED", {})
    monkeypatch.setattr(sampler_backend_module, "_LAUNCHED", set())


def test_two_launches_per_call_and_no_sync_on_cuda(bank, stats, table, fresh_backend):
    config = DadamConfig(max_patches=4, soft_label=True)
    tables, _ = build_tables(bank, stats, config)
    with fake_cuda() as log:
        cuda_tables = _fake_cuda_tables(tables)
        labels = table[:256].to("cuda")
        ok, mask = torch.ones(1, dtype=torch.int32, device="cuda"), torch.ones(256, dtype=torch.bool, device="cuda")
        assert sampler_backend("cuda") == ("triton", "not launched yet")
        for call in range(2):  # the first call included
            with log.recording():
                params = sample_batch(labels, cuda_tables, config, mask=mask, ok=ok)
            assert not log.syncs, (call, log.syncs)
            assert len(log.launches) == 2 and log.launches[0].startswith("aten.rand"), (call, log.launches)
            assert log.launches[1] == f"triton _cooccurrence_kernel grid=({256 // kernel.BLOCK},)"
        assert params.boxes.shape == (256, 4, 4) and params.labels.device.type == "cuda"
        assert sampler_backend("cuda") == ("triton", "")
        with log.recording():
            sample_batch(labels, cuda_tables, DadamConfig(companions="correlation"))
        assert not any("triton" in name for name in log.launches)


def test_falls_back_only_when_the_kernel_cannot_be_built(bank, stats, table, fresh_backend, monkeypatch):
    from dadam.kernels import KernelBuildError

    config = DadamConfig()
    tables, _ = build_tables(bank, stats, config)
    calls = []

    def cannot_build(*args, **kwargs):
        calls.append(1)
        raise KernelBuildError("Triton cannot build _cooccurrence_kernel here: RuntimeError: no C compiler")

    monkeypatch.setattr(kernel, "launch", cannot_build)
    with fake_cuda() as log:
        cuda_tables = _fake_cuda_tables(tables)
        labels = table[:32].to("cuda")
        with pytest.warns(RuntimeWarning, match="cannot build _cooccurrence_kernel here: .* torch ops instead"):
            params = sample_batch(labels, cuda_tables, config)
        assert params.boxes.shape == (32, 3, 4)
        backend = sampler_backend("cuda")
        assert backend.name == "torch" and "no C compiler" in backend.reason
        with log.recording():
            sample_batch(labels, cuda_tables, config)  # no second try, no second warning
        assert len(calls) == 1 and not any("triton" in name for name in log.launches)

    def launch_fails(*args, **kwargs):
        raise RuntimeError("an error of the launch itself")

    monkeypatch.setattr(sampler_backend_module, "_FAILED", {})
    monkeypatch.setattr(kernel, "launch", launch_fails)
    with fake_cuda():
        with pytest.raises(RuntimeError, match="an error of the launch itself"):
            sample_batch(table[:32].to("cuda"), _fake_cuda_tables(tables), config)


# --------------------------------------------------------------------------- compiled PTX (sm_90, compiled on the CPU)


@pytest.mark.slow
def test_ptx_for_sm90_keeps_the_rounding_of_the_torch_rule(bank, stats):
    # Separately rounded float32 products (no fma contraction), float64 running sums rounded to float32 (cvt.rn),
    # the round-half-to-even constants of the jitter, and the barrier between slots.
    compiler = pytest.importorskip("triton.compiler")
    from triton.backends.compiler import GPUTarget

    pointers = {
        "labels_ptr": "*fp32",
        "u_ptr": "*fp32",
        "mask_ptr": "*u8",
        "ok_ptr": "*i32",
        **dict.fromkeys(
            ("tail_w_ptr", "blend_w_ptr", "comp_w_ptr", "out_alpha_ptr", "anchor_ptr", "lung_ptr"), "*fp32"
        ),
        **dict.fromkeys(("covered_ptr", "out_active_ptr", "out_changed_ptr"), "*u8"),
        **dict.fromkeys(("rows_ptr", "row_classes_ptr"), "*i32"),
        "out_labels_ptr": "*fp32",
    }
    scalars = {"p": "fp32", "alpha": "fp32", "blend_label": "fp32", "shift": "fp32"}
    config = DadamConfig(max_patches=3, candidates=8, jitter=0.1)
    layout = cooccurrence_uniforms(config).layout()
    constexprs = {
        "C": 26,
        "NF": 14,
        "K": 3,
        "R": 8,
        "RP": 8,
        "CP": 32,
        "U": cooccurrence_uniforms(config).columns,
        **{f"U_{name.upper()}": layout[name].start for name in layout},
        "U_SLOT_STRIDE": layout["slot_class"].stride,
        "HAS_MASK": True,
        "CHECK": True,
        "JITTER": True,
        "LUNG": True,
        "BLOCK": kernel.BLOCK,
    }
    fn = kernel._cooccurrence_kernel
    signature = {}
    for name in fn.arg_names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name.endswith("_ptr"):
            signature[name] = pointers.get(name, "*i64")
        else:
            signature[name] = scalars.get(name, "i32")
    src = compiler.ASTSource(fn, signature, constexprs=constexprs)
    try:
        ptx = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=kernel.OPTIONS).asm["ptx"]
    except Exception as e:  # no ptxas / LLVM backend in this install
        pytest.skip(f"cannot compile for sm_90 here: {e!r}")
    assert ".target sm_90" in ptx
    assert not re.search(r"\bfma\.", ptx), "fma contraction would break equality with torch"
    assert re.search(r"\bmul\.rn\.f32", ptx) and re.search(r"\badd\.rn\.f64", ptx)
    assert re.search(r"\bcvt\.rn\.f32\.f64", ptx)
    assert "0f4B400000" in ptx and "0fCB400000" in ptx, "the round-half-to-even trick was folded away"
    assert re.search(r"\bbar\.sync", ptx)


# ---------------------------------------------------------------------------------------- CUDA: the compiled kernel


def _assert_cuda_kernel_equals_torch(labels, spec, u, tables, config, *, mask=None, lungs=None):
    """The kernel on CUDA (``backend="triton"``) equals the torch rule on CUDA and on the CPU for the same uniforms,
    and leaves the ok word at 1."""
    want_cpu = cooccurrence_params(labels, u, tables, config, mask, lungs)
    dev = torch.device("cuda")
    mask, lungs = (None if t is None else t.to(dev) for t in (mask, lungs))
    cuda_tables, u_cuda = tables.to(dev), spec.split(u.raw.to(dev))
    want = cooccurrence_params(labels.to(dev), u_cuda, cuda_tables, config, mask, lungs)
    ok = torch.ones(1, dtype=torch.int32, device=dev)
    args = (labels.to(dev), u_cuda, spec, cooccurrence_params, cuda_tables, config)
    got = draw_params(*args, mask=mask, ok=ok, backend="triton", lung_boxes=lungs)
    _assert_same(got, want)
    _assert_same(got.to("cpu"), want_cpu)
    assert int(ok) == 1


@pytest.mark.gpu
@pytest.mark.parametrize("case", range(len(OPTIONS)))
def test_cuda_kernel_equals_the_torch_rule(bank, stats, table, case):
    config = DadamConfig(**OPTIONS[case])
    tables, _ = build_tables(bank, stats, config)
    labels = _labels(table, 3000, seed=case)
    mask = torch.rand(3000, generator=torch.Generator().manual_seed(case)) < 0.8
    spec, u = _uniforms(config, 3000, seed=case, extreme=case % 2 == 1)
    _assert_cuda_kernel_equals_torch(labels, spec, u, tables, config, mask=mask)


@pytest.mark.gpu
@pytest.mark.parametrize("case", range(len(LUNG_OPTIONS)))
def test_cuda_kernel_equals_the_torch_rule_with_lung_placement(bank, stats, table, case):
    config, tables, _ = _lung_case(bank, stats, case)
    labels, lungs = _labels(table, 3000, seed=case), _lung_boxes(3000, seed=case)
    spec, u = _uniforms(config, 3000, seed=case, extreme=True)
    _assert_cuda_kernel_equals_torch(labels, spec, u, tables, config, lungs=lungs)


@pytest.mark.gpu
def test_cuda_sequential_cdf_equals_the_cpu_one():
    g = torch.Generator().manual_seed(1)
    w = (torch.rand(4096, 26, generator=g) * 2.0 ** torch.randint(-30, 31, (4096, 26), generator=g)).float()
    assert torch.equal(sequential_cdf(w.cuda()).cpu(), sequential_cdf(w))


@pytest.mark.gpu
def test_cuda_call_launches_two_kernels_and_never_syncs(bank, stats, table):
    config = DadamConfig(max_patches=4)
    tables, _ = build_tables(bank, stats, config)
    dev = torch.device("cuda")
    cuda_tables, labels = tables.to(dev), table[:256].to(dev)
    ok = torch.ones(1, dtype=torch.int32, device=dev)
    generator = torch.Generator(device=dev).manual_seed(0)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        sample_batch(labels, cuda_tables, config, generator=generator, ok=ok)  # the first call included
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            sample_batch(labels, cuda_tables, config, generator=generator, ok=ok)
            torch.cuda.set_sync_debug_mode(0)
            torch.cuda.synchronize()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    kernels = [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    assert len(kernels) <= 2 and any("_cooccurrence_kernel" in k for k in kernels), kernels
    assert sampler_backend(dev).name == "triton" and int(ok) == 1
