"""Launch budget of a DADAM forward on a GPU, counted on this machine with fake CUDA tensors (no GPU needed).

A forward at B=256 dispatches its aten ops and Triton launches as on a GPU (``tests.helpers.fake_cuda``): the count
must stay within the budget, the host must never wait for the device (no ``.item()``, no copy from pageable memory),
and the narrow fallback must take the vectorised path only when a kernel cannot be built.
"""

import collections
import warnings

import pytest
import torch

import dadam.ops
from dadam import DiseasedAreaAugment, LabelStats
from tests.helpers import fake_cuda, make_bank, make_label_table

pytest.importorskip("triton")

BUDGET = 6  # device launches per forward
B, CANVAS = 256, 448
CASES = [(torch.float32, 3), (torch.uint8, 1)]


@pytest.fixture(scope="module")
def table():
    return make_label_table(4000, seed=3)


@pytest.fixture(scope="module")
def bank():
    return make_bank(canvas=CANVAS, min_size=20, max_size=220, seed=1)


@pytest.fixture
def fresh_triton(monkeypatch):
    """No Triton failure recorded and no kernel variant built yet in this process (restored afterwards)."""
    import dadam.kernels.runtime
    import dadam.sampling.backend

    monkeypatch.setattr(dadam.ops, "_triton_failure", None)
    monkeypatch.setattr(dadam.kernels.runtime, "_built", set())
    monkeypatch.setattr(dadam.sampling.backend, "_FAILED", {})
    monkeypatch.setattr(dadam.sampling.backend, "_LAUNCHED", set())


def _forward(bank, table, dtype, channels, *, calls=1, inplace=False, **options):
    """Launches and syncs of ``calls`` forwards of a fresh module on fake CUDA tensors (the first call included)."""
    aug = DiseasedAreaAugment(bank, LabelStats.from_labels(table), p=1.0, max_patches=4, **options)
    logs = []
    with fake_cuda() as log:
        aug = aug.to("cuda")
        if dtype == torch.uint8:
            images = torch.randint(0, 256, (B, channels, CANVAS, CANVAS), dtype=dtype, device="cuda")
        else:
            images = torch.rand(B, channels, CANVAS, CANVAS, dtype=dtype, device="cuda")
        labels = table[:B].to("cuda")
        for _ in range(calls):
            with log.recording():
                out, new_labels = aug(images, labels, inplace=inplace)
            logs.append((list(log.launches), list(log.syncs)))
        assert out.shape == images.shape and out.device.type == "cuda" and new_labels.shape == labels.shape
        assert (out is images) == inplace
    return logs, aug


@pytest.mark.parametrize("inplace", [False, True], ids=["out_of_place", "in_place"])
@pytest.mark.parametrize("dtype,channels", CASES, ids=["fp32_3ch", "uint8_1ch"])
def test_forward_stays_within_the_launch_budget_without_syncs(bank, table, fresh_triton, dtype, channels, inplace):
    logs, aug = _forward(bank, table, dtype, channels, calls=2, inplace=inplace)
    for call, (launches, syncs) in enumerate(logs):  # the first call (fresh module) and the next one
        assert not syncs, f"call {call}: host syncs {syncs}"
        counts = collections.Counter(launches).most_common()
        assert len(launches) <= BUDGET, f"call {call}: {len(launches)} launches > {BUDGET}: {counts}"
        paste = [n for n in launches if "paste" in n]
        assert len(paste) == 1, launches
    assert aug.backend == "triton"


def test_paste_grids_are_sized_by_the_work(bank, table, fresh_triton):
    # out of place: one program per tile of the image; in place: SPLIT programs per slot (never the bank's max patch)
    from dadam.kernels.paste import SPLIT, TILE

    (launches, _), *_ = _forward(bank, table, torch.float32, 3)[0]
    th, te = TILE[4]
    tiles = -(-CANVAS // th) * -(-CANVAS // te)
    assert any(f"_copy_paste_kernel grid=({B * tiles},)" in n for n in launches), launches
    (launches, _), *_ = _forward(bank, table, torch.uint8, 1, inplace=True)[0]
    assert any(f"_paste_in_place_kernel grid=({B * 4}, {SPLIT})" in n for n in launches), launches


def test_the_count_sees_an_added_launch_and_an_added_sync(bank, table, fresh_triton, monkeypatch):
    # The budget test must fail when someone adds a launch: one more torch op, or one more Triton kernel, counts.
    (base, _), *_ = _forward(bank, table, torch.uint8, 1)[0]
    paste = DiseasedAreaAugment._paste

    def one_more_op(self, images, params, **kw):
        return paste(self, images, params, **kw).add_(0)

    monkeypatch.setattr(DiseasedAreaAugment, "_paste", one_more_op)
    (more, _), *_ = _forward(bank, table, torch.uint8, 1)[0]
    assert len(more) == len(base) + 1 and "aten.add_.Tensor" in more
    monkeypatch.setattr(DiseasedAreaAugment, "_paste", paste)

    triton_paste = dadam.ops._triton

    def twice(*args, **kw):
        triton_paste(*args, **kw)
        return triton_paste(*args, **kw)

    monkeypatch.setattr(dadam.ops, "_triton", twice)
    (more, _), *_ = _forward(bank, table, torch.uint8, 1)[0]
    assert len(more) == len(base) + 1 and sum("paste" in n for n in more) == 2
    monkeypatch.setattr(dadam.ops, "_triton", triton_paste)

    def reads_back(self, images, params, **kw):
        out = paste(self, images, params, **kw)
        torch.tensor([0.5], device=images.device)  # a constant from pageable host memory: the host waits
        bool(params.active.any())  # a value read back: the host waits (fake tensors cannot answer: it raises)
        return out

    monkeypatch.setattr(DiseasedAreaAugment, "_paste", reads_back)
    with pytest.raises(RuntimeError, match="_local_scalar_dense"):
        _forward(bank, table, torch.uint8, 1)
    with fake_cuda() as log:
        active = torch.zeros(4, dtype=torch.bool, device="cuda")
        with log.recording(), pytest.raises(RuntimeError):  # fake tensors cannot answer
            bool(active.any())
        with log.recording():
            torch.tensor([0.5], device="cuda")
        assert log.syncs == ["aten._to_copy.default (pageable host to device)"]


def test_a_kernel_that_cannot_be_built_falls_back_with_its_reason(bank, table, fresh_triton, monkeypatch):
    from triton.runtime.jit import JITFunction

    def no_compiler(self, *args, **kwargs):
        raise RuntimeError("Failed to find C compiler. Please specify via CC environment variable.")

    monkeypatch.setattr(JITFunction, "warmup", no_compiler)
    with pytest.warns(RuntimeWarning) as caught:
        logs, aug = _forward(bank, table, torch.float32, 3, calls=2)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2, messages  # the paste and the sampler, once each
    assert all("Failed to find C compiler" in m for m in messages), messages
    assert aug.backend.startswith("torch-vectorised (triton unavailable: KernelBuildError: Triton cannot build")
    assert "Failed to find C compiler" in aug.backend
    for launches, syncs in logs:
        assert not syncs and not any("triton" in n for n in launches)  # the vectorised path, no second try
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once per process
        _forward(bank, table, torch.float32, 3)


def test_other_errors_propagate_and_keep_the_kernel(bank, table, fresh_triton):
    def out_of_memory(name):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    aug = DiseasedAreaAugment(bank, LabelStats.from_labels(table), p=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning
        with fake_cuda(on_launch=out_of_memory), pytest.raises(torch.cuda.OutOfMemoryError):
            aug = aug.to("cuda")
            aug(torch.rand(8, 1, CANVAS, CANVAS, device="cuda"), table[:8].to("cuda"))
    assert dadam.ops._triton_failure is None and aug.backend == "triton"
