"""dadam.sampling: the named uniforms, the two companion rules as pure functions of them, the mask, the tables.

The co-occurrence rule is compared, sample by sample, with a slow reference written here from its description
(Python loops over samples, slots and candidates; the label rows read from the raw label table, not from the tables
under test).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats as scipy_stats
from torch.utils._python_dispatch import TorchDispatchMode

from dadam import DiseasedAreaAugment, LabelStats, PatchBank
from dadam.config import COMPANION_RULES, DadamConfig
from dadam.labels import CXR_LT_CLASSES
from dadam.sampling import (
    MODE_BLEND,
    MODE_NONE,
    MODE_PASTE,
    RULES,
    build_tables,
    cooccurrence_params,
    cooccurrence_uniforms,
    correlation_uniforms,
    sample_batch,
)
from dadam.sampling.uniforms import Interleaved, Quantity, UniformSpec
from tests.helpers import NF, make_bank

CANVAS = 64
FIELDS = ("boxes", "patch_ids", "classes", "active", "alpha", "mode", "changed", "labels", "template", "dropped")


def _batch(table: torch.Tensor) -> torch.Tensor:
    """Normal rows, tail-class rows and others, with a few unknown (NaN) entries."""
    y = table[:600].clone()
    y[::13, 3] = float("nan")
    return y


def _assert_params_equal(a, b, where=""):
    for name in FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        assert torch.equal(x.nan_to_num(-7), y.nan_to_num(-7)), f"{where}{name} differs"


# ---------------------------------------------------------------------------------------------------- uniforms


def test_uniform_spec_views_follow_the_declared_layout():
    spec = UniformSpec(
        Quantity("gate"), Quantity("jitter", 2), Interleaved((2, 3), Quantity("cls"), Quantity("shift", 2))
    )
    assert spec.columns == 1 + 2 + 2 * 3 * 3
    raw = torch.arange(4 * spec.columns, dtype=torch.float32).view(4, spec.columns)
    u = spec.split(raw)
    assert u.raw is raw and set(u) == {"gate", "jitter", "cls", "shift"}
    # slow reference: walk the columns in the documented order
    col = 0
    for name, shape in (("gate", ()), ("jitter", (2,))):
        n = math.prod(shape)
        assert torch.equal(u[name].reshape(4, -1), raw[:, col : col + n]), name
        col += n
    for s in range(2):
        for c in range(3):
            assert torch.equal(u.cls[:, s, c], raw[:, col])
            assert torch.equal(u.shift[:, s, c], raw[:, col + 1 : col + 3])
            col += 3
    assert col == spec.columns
    layout = spec.layout()
    assert (layout["shift"].start, layout["shift"].stride, layout["shift"].width) == (4, 3, 2)
    assert u.cls.data_ptr() == raw.data_ptr() + 3 * 4  # views, no copies
    with pytest.raises(AttributeError, match="no uniform draw named 'tail'"):
        _ = u.tail
    with pytest.raises(ValueError, match=r"uniforms must have shape \(B, 21\), got \(4, 20\)"):
        spec.split(raw[:, :20])
    with pytest.raises(ValueError, match="uniform draw 'gate' is declared twice"):
        UniformSpec(Quantity("gate"), Interleaved((2,), Quantity("gate")))


def test_correlation_stream_is_the_one_of_release_0_1_0():
    """One torch.rand(B, 6 + (K - 1) R 4): gate, tail, companion, patch, jitter (2), then per slot and candidate
    (class, patch, jitter x, jitter y)."""
    spec = correlation_uniforms(DadamConfig(max_patches=3, candidates=5))
    assert spec.columns == 6 + 2 * 5 * 4
    assert [(k, s.start) for k, s in spec.layout().items()] == [
        ("gate", 0),
        ("tail", 1),
        ("companion", 2),
        ("patch", 3),
        ("jitter", 4),
        ("slot_class", 6),
        ("slot_patch", 7),
        ("slot_jitter", 8),
    ]
    assert spec.layout()["slot_class"].stride == 4
    assert correlation_uniforms(DadamConfig(max_patches=1)).columns == 6


# ---------------------------------------------------------------------------------------------------- pure functions


@pytest.mark.parametrize("companions", COMPANION_RULES)
def test_given_the_uniforms_the_rule_is_a_pure_per_row_function(bank, stats, table, companions):
    config = DadamConfig(p=0.8, max_patches=3, candidates=3, jitter=0.2, companions=companions)
    tables, _ = build_tables(bank, stats, config)
    uniforms, rule = RULES[companions]
    labels = _batch(table)
    spec = uniforms(config)
    u = spec.draw(len(labels), generator=torch.Generator().manual_seed(3), device="cpu")
    raw = u.raw.clone()
    params = rule(labels, u, tables, config)
    assert torch.equal(u.raw, raw), "the rule must not touch the uniforms"
    _assert_params_equal(rule(labels, spec.split(raw.clone()), tables, config), params, "repeat: ")
    # the one random call: sample_batch with the same seed draws exactly these uniforms
    _assert_params_equal(
        sample_batch(labels, tables, config, generator=torch.Generator().manual_seed(3)), params, "sample_batch: "
    )
    for b in range(0, len(labels), 37):  # batched == per row
        one = rule(labels[b : b + 1], spec.split(raw[b : b + 1]), tables, config)
        _assert_params_equal(one, params[b], f"row {b}: ")
    assert (params.mode == MODE_PASTE).any() and (params.mode == MODE_BLEND).any()


class _OpLog(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.add(str(func.overloadpacket.__name__))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("companions", COMPANION_RULES)
def test_sampler_ops_include_no_host_sync(bank, stats, table, companions):
    """The ops a call dispatches (the same on a GPU) read no value back to the host and index no tensor by mask."""
    config = DadamConfig(p=0.8, companions=companions)
    tables, _ = build_tables(bank, stats, config)
    labels, generator = _batch(table), torch.Generator().manual_seed(0)
    with _OpLog() as log:
        sample_batch(labels, tables, config, generator=generator)
    # reading a value (item, bool()), shapes that depend on values, writes by index, constants made from host data
    syncing = {"_local_scalar_dense", "item", "nonzero", "masked_select", "index_put_", "lift_fresh", "lift_fresh_copy"}
    assert "cumsum" in log.ops and not log.ops & syncing, sorted(log.ops & syncing)


# ---------------------------------------------------------------------------------------------------- co-occurrence


def _cdf_index(weights: np.ndarray, u: float) -> tuple[int, bool]:
    """Slow inverse CDF: the first class whose cumulative weight exceeds ``u * total`` (or reaches the total)."""
    cdf = np.cumsum(weights.astype(np.float64)).astype(np.float32)  # float64 running sums rounded to float32
    total = cdf[-1]
    if not total > 0:
        return 0, False
    v = np.float32(u) * total
    return next(c for c in range(len(cdf)) if cdf[c] > v or cdf[c] >= total), True


def _reference_lung_corner(box, donor_lung, recipient, canvas):
    """placement="lung" for one patch, from dadam.anatomy's description: the box centre in the donor's lung box
    (float64, clamped to [-2, 3], rounded to float32), the same point in the recipient's lung box, the corner half a
    patch up and left (each step a float32 operation), rounded half to even, kept inside the canvas. None where a
    lung box is unknown (NaN)."""
    x0, y0, x1, y1 = box
    size = (x1 - x0, y1 - y0)
    corner = []
    for axis in (0, 1):
        lo, hi = float(donor_lung[axis]), float(donor_lung[axis + 2])
        anchor = np.float32(min(max(((box[axis] + box[axis + 2]) / (2 * canvas) - lo) / (hi - lo), -2.0), 3.0))
        r_lo, r_hi = np.float32(recipient[axis]), np.float32(recipient[axis + 2])
        centre = r_lo + anchor * (r_hi - r_lo)  # numpy float32 scalars: each operation rounded to float32
        v = centre * np.float32(canvas) - np.float32(size[axis]) * np.float32(0.5)
        if np.isnan(v):
            return None
        corner.append(min(max(int(np.rint(v)), 0), canvas - size[axis]))  # rint: half to even
    return corner


def _reference_cooccurrence(labels, u, table, bank, config, tables, lungs=None):
    """The co-occurrence rule, sample by sample, from its description. Returns per-sample dicts. ``lungs``: the
    recipients' lung boxes (``placement="lung"``)."""
    tw, bw, cw = (t.numpy() for t in (tables.tail_weight, tables.blend_tail_weight, tables.companion_weight))
    covered = [int(bank.class_count[c]) > 0 and c != NF for c in range(26)]
    rows_of = {c: [r for r in range(len(table)) if table[r, c] > 0.5] for c in range(26)}
    out = []
    for b in range(len(labels)):
        y = labels[b]
        pos = [bool(y[c] > 0.5) for c in range(26)]
        normal = pos[NF] and not any(pos[c] for c in range(26) if c != NF)
        gate = np.float32(u.gate[b]) < np.float32(config.p)
        w = tw if normal else bw * np.array([pos[c] and c != NF for c in range(26)], np.float32)
        t, ok_t = _cdf_index(w, u.tail[b])
        j, ok_j = _cdf_index(np.where(pos, 0, cw[t]).astype(np.float32), u.companion[b])
        changed = bool(gate and ok_t and (normal or ok_j))
        res = {"mode": MODE_NONE, "slots": [], "template": -1, "dropped": 0}
        if not changed:
            out.append(res)
            continue

        def patch(c, uu):
            n, start = int(bank.class_count[c]), int(bank.class_start[c])
            return start + min(int(np.float32(uu) * np.float32(n)), n - 1)

        def box(pid, uj, lung=None if lungs is None else lungs[b]):
            x0, y0, x1, y1 = bank.boxes[pid].tolist()
            if config.placement == "lung":
                corner = _reference_lung_corner([x0, y0, x1, y1], bank.lung_boxes[pid].tolist(), lung, CANVAS)
                if corner is not None:
                    x0, y0, x1, y1 = corner[0], corner[1], corner[0] + x1 - x0, corner[1] + y1 - y0
            if config.jitter > 0:
                dx, dy = (int(np.round((2 * np.float32(v) - 1) * np.float32(config.jitter * CANVAS))) for v in uj)
                nx, ny = min(max(x0 + dx, 0), CANVAS - (x1 - x0)), min(max(y0 + dy, 0), CANVAS - (y1 - y0))
                x0, y0, x1, y1 = nx, ny, nx + x1 - x0, ny + y1 - y0
            return [x0, y0, x1, y1]

        if not normal:
            res["mode"] = MODE_BLEND
            pid = patch(j, u.patch[b])
            res["slots"].append((j, pid, box(pid, u.jitter[b].tolist())))
            out.append(res)
            continue
        res["mode"] = MODE_PASTE
        pid = patch(t, u.patch[b])
        res["slots"].append((t, pid, box(pid, u.jitter[b].tolist())))
        rows = rows_of[t]
        remaining = []
        if rows:
            r = rows[min(int(np.float32(u.template[b]) * np.float32(len(rows))), len(rows) - 1)]
            res["template"] = r
            remaining = [c for c in range(26) if table[r, c] > 0.5 and covered[c] and c != t]
        for k in range(1, config.max_patches):
            slot = None
            for cand in range(config.candidates if remaining else 0):
                # the class: uniform among the template classes not placed yet (ascending class order)
                idx, _ = _cdf_index(np.ones(len(remaining), np.float32), u.slot_class[b, k - 1, cand])
                c = remaining[idx]
                pid = patch(c, u.slot_patch[b, k - 1, cand])
                bx = box(pid, u.slot_jitter[b, k - 1, cand].tolist())
                if not any(_overlap(bx, s[2]) for s in res["slots"] if s is not None):
                    slot = (c, pid, bx)
                    remaining.remove(c)
                    break
            res["slots"].append(slot)
        res["dropped"] = len(remaining)
        out.append(res)
    return out


def _overlap(a, b):
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _with_lung_boxes(bank: PatchBank, *, seed: int = 0) -> PatchBank:
    """``bank`` with random donor lung boxes (some small and off-centre: anchors outside [0, 1] and clamped)."""
    g = torch.Generator().manual_seed(seed)
    lo = torch.rand(len(bank), 2, generator=g) * 0.4  # (N, 2)
    return bank.with_lung_boxes(torch.cat([lo, lo + 0.05 + torch.rand(len(bank), 2, generator=g) * 0.55], 1))


def _recipient_lung_boxes(n: int, *, seed: int = 0) -> torch.Tensor:
    """``(n, 4)`` recipients' lung boxes: random, every 9th unknown (NaN), a few tiny or touching the canvas edge."""
    g = torch.Generator().manual_seed(seed)
    lo = torch.rand(n, 2, generator=g) * 0.5
    lungs = torch.cat([lo, (lo + 0.02 + torch.rand(n, 2, generator=g) * 0.6).clamp(max=1.0)], 1)  # (n, 4)
    lungs[::9] = float("nan")
    lungs[1::9] = torch.tensor([0.0, 0.0, 1.0, 1.0])
    lungs[2::9] = torch.tensor([0.9, 0.95, 0.91, 0.96])  # tiny, at the bottom right
    return lungs


@pytest.mark.parametrize(
    "options",
    [
        dict(p=0.8, max_patches=3, candidates=8),
        dict(p=1.0, max_patches=4, candidates=1, jitter=0.25),
        dict(p=1.0, max_patches=1, tail=("Fibrosis", "Mass")),
        dict(p=0.9, max_patches=3, candidates=4, placement="lung"),
        dict(p=1.0, max_patches=4, candidates=3, jitter=0.2, placement="lung"),
    ],
)
def test_cooccurrence_rule_equals_the_slow_reference(table, options):
    bank = make_bank(canvas=CANVAS, max_size=28, seed=1)  # large patches: some classes do not fit
    bank = _with_lung_boxes(bank, seed=2)
    stats = LabelStats.from_labels(table)
    config = DadamConfig(**options)
    tables, _ = build_tables(bank, stats, config)
    labels = _batch(table)
    u = cooccurrence_uniforms(config).draw(len(labels), generator=torch.Generator().manual_seed(11), device="cpu")
    lungs = _recipient_lung_boxes(len(labels), seed=3)
    params = cooccurrence_params(labels, u, tables, config, None, lungs)
    ref = _reference_cooccurrence(labels, u, table, bank, config, tables, lungs.tolist())
    K = config.max_patches
    for b, r in enumerate(ref):
        assert int(params.mode[b]) == r["mode"], b
        assert int(params.template[b]) == r["template"] and int(params.dropped[b]) == r["dropped"], b
        slots = r["slots"] + [None] * (K - len(r["slots"]))
        for k, s in enumerate(slots):
            assert bool(params.active[b, k]) == (s is not None), (b, k)
            if s is not None:
                assert (int(params.classes[b, k]), int(params.patch_ids[b, k])) == s[:2], (b, k)
                assert params.boxes[b, k].tolist() == s[2], (b, k)
    assert sum(r["dropped"] for r in ref) > 0 or K == 1
    assert sum(r["mode"] == MODE_PASTE for r in ref) > 50


def test_template_rows_are_uniform_among_the_rows_with_the_tail_class(bank, stats, table):
    t = CXR_LT_CLASSES.index("Fibrosis")
    aug = DiseasedAreaAugment(bank, stats, p=1.0, tail=["Fibrosis"], generator=5)
    normal = torch.zeros(30000, 26)
    normal[:, NF] = 1.0
    params = aug.sample(normal)
    assert (params.mode == MODE_PASTE).all() and (params.classes[:, 0] == t).all()
    rows = [r for r in range(len(table)) if table[r, t] > 0.5]  # slow: the rows showing t
    assert len(rows) > 100
    counts = np.bincount(params.template.numpy(), minlength=len(table))
    assert counts.sum() == len(normal) and set(np.flatnonzero(counts)) <= set(rows)
    p_value = scipy_stats.chisquare(counts[rows]).pvalue  # H0: uniform over the rows showing t
    assert p_value > 1e-3, p_value
    # the test has power here: a quarter of the rows drawn 25 % more often fails it
    skewed = counts[rows] + np.where(np.arange(len(rows)) < len(rows) // 4, len(normal) // len(rows) // 4, 0)
    assert scipy_stats.chisquare(skewed).pvalue < 1e-3


def test_pasted_label_sets_are_subsets_of_the_template_row_and_covered(bank, stats, table):
    aug = DiseasedAreaAugment(bank, stats, p=1.0, max_patches=4, generator=2)
    labels = table[table[:, NF] > 0.5][:800]
    params = aug.sample(labels)
    covered = {c for c in range(26) if int(bank.class_count[c]) > 0}
    n_full = 0
    for b in range(len(labels)):
        assert params.mode[b] == MODE_PASTE
        placed = set(params.classes[b][params.active[b]].tolist())
        row = set((table[int(params.template[b])] > 0.5).nonzero().flatten().tolist())
        allowed = row & covered
        assert CXR_LT_CLASSES[int(params.classes[b, 0])] in aug.tail_names
        assert placed <= allowed, (b, placed, allowed)
        assert len(allowed) - len(placed) == int(params.dropped[b]), b
        assert set(params.labels[b].nonzero().flatten().tolist()) == placed
        n_full += placed == allowed
    assert n_full > 0.8 * len(labels)


def test_cooccurrence_blends_follow_the_cooccurrence_counts(bank, stats, table):
    t = CXR_LT_CLASSES.index("Fibrosis")
    aug = DiseasedAreaAugment(bank, stats, p=1.0, generator=8)
    labels = torch.zeros(20000, 26)
    labels[:, t] = 1.0
    params = aug.sample(labels)
    assert (params.mode == MODE_BLEND).all()
    counts = np.bincount(params.classes[:, 0].numpy(), minlength=26)
    # slow reference: rows of the table showing t and j, for the covered classes j other than t
    both = np.array(
        [
            sum(1 for r in range(len(table)) if table[r, t] > 0.5 and table[r, j] > 0.5)
            if int(bank.class_count[j]) > 0 and j not in (t, NF)
            else 0
            for j in range(26)
        ],
        np.float64,
    )
    ok = both > 0
    assert ok.sum() >= 3 and np.array_equal(counts > 0, ok)
    p_value = scipy_stats.chisquare(counts[ok], both[ok] / both.sum() * len(labels)).pvalue
    assert p_value > 1e-3, p_value


def _reference_box(bank, pid, lung, uj, jitter):
    """The box of patch ``pid`` on a recipient with lung box ``lung`` (None: aligned placement), jittered by the
    uniforms ``uj`` (slow reference)."""
    x0, y0, x1, y1 = bank.boxes[pid].tolist()
    corner = (
        None if lung is None else _reference_lung_corner([x0, y0, x1, y1], bank.lung_boxes[pid].tolist(), lung, CANVAS)
    )
    if corner is not None:
        x0, y0, x1, y1 = corner[0], corner[1], corner[0] + x1 - x0, corner[1] + y1 - y0
    if jitter > 0:
        dx, dy = (int(np.round((2 * np.float32(v) - 1) * np.float32(jitter * CANVAS))) for v in uj)
        nx, ny = min(max(x0 + dx, 0), CANVAS - (x1 - x0)), min(max(y0 + dy, 0), CANVAS - (y1 - y0))
        x0, y0, x1, y1 = nx, ny, nx + x1 - x0, ny + y1 - y0
    return [x0, y0, x1, y1]


@pytest.mark.parametrize("companions", COMPANION_RULES)
def test_lung_placement_moves_the_boxes_of_the_aligned_draws(table, companions):
    """The same draws (classes, first patch, which samples change) as aligned placement, each box moved by the lung
    rule of its patch and sample (slow reference; a companion's box is that of one of its slot's candidates);
    samples with an unknown lung box get exactly the aligned params."""
    bank = _with_lung_boxes(make_bank(canvas=CANVAS, max_size=12, seed=1), seed=5)
    stats = LabelStats.from_labels(table)
    config = DadamConfig(p=0.9, max_patches=3, candidates=4, jitter=0.1, companions=companions, placement="lung")
    tables, _ = build_tables(bank, stats, config)
    uniforms, rule = RULES[companions]
    labels = _batch(table)
    spec = uniforms(config)
    u = spec.draw(len(labels), generator=torch.Generator().manual_seed(6), device="cpu")
    lungs = _recipient_lung_boxes(len(labels), seed=7)
    moved = rule(labels, u, tables, config, None, lungs)
    aligned = rule(labels, u, tables, config.replace(placement="aligned"), None, lungs)  # lungs not read
    assert torch.equal(moved.mode, aligned.mode) and torch.equal(moved.patch_ids[:, 0], aligned.patch_ids[:, 0])
    unknown = torch.isnan(lungs).all(1).nonzero().flatten()  # (U,)
    alone = rule(labels[unknown], spec.split(u.raw[unknown]), tables, config, None, lungs[unknown])
    _assert_params_equal(alone, aligned[unknown], "unknown lung boxes: ")
    checked = 0
    for b in range(len(labels)):
        lung = None if b in unknown.tolist() else lungs[b].tolist()
        for k in range(config.max_patches):
            if moved.active[b, k]:
                pid = int(moved.patch_ids[b, k])
                shifts = [u.jitter[b].tolist()] if k == 0 else u.slot_jitter[b, k - 1].tolist()
                want = [_reference_box(bank, pid, lung, uj, config.jitter) for uj in shifts]
                assert moved.boxes[b, k].tolist() in want, (b, k, moved.boxes[b, k].tolist(), want)
                checked += 1
    assert checked > 300 and (moved.boxes != aligned.boxes).any(-1).float().mean() > 0.2


def test_lung_placement_errors(bank, stats, table):
    labels = table[:6]
    lung = DadamConfig(placement="lung")
    with pytest.raises(
        ValueError, match=rf"{len(bank)} of the bank's {len(bank)} patches have none .*rebuild the bank"
    ):
        build_tables(bank, stats, lung)
    lung_bank = _with_lung_boxes(bank)
    tables, _ = build_tables(lung_bank, stats, lung)
    with pytest.raises(ValueError, match=r"placement='lung' needs the recipients' lung boxes: pass lung_boxes"):
        sample_batch(labels, tables, lung)
    good = torch.tensor([[0.1, 0.1, 0.9, 0.8]]).repeat(6, 1)
    for bad, what in (
        (good[:5], r"must be a \(6, 4\) float tensor .*got shape \(5, 4\)"),
        (good.long(), r"dtype torch.int64"),
        (good.to("meta"), r"are on meta, the labels on cpu"),
        (good.clone().index_fill_(0, torch.tensor([4]), 1.5), r"row 4 is \[1.5, 1.5, 1.5, 1.5\]: a lung box is"),
        (torch.tensor([[0.5, 0.1, 0.4, 0.8]] * 6), r"row 0 .* x0 < x1 .*\(6 such rows\)"),
        (good.clone().index_fill_(1, torch.tensor([0]), float("nan")), r"row 0 is \[nan, 0.1"),
    ):
        with pytest.raises(ValueError, match=what):
            sample_batch(labels, tables, lung, lung_boxes=bad)
    with pytest.raises(TypeError, match=r"lung_boxes must be a \(6, 4\) float tensor or None, got list"):
        sample_batch(labels, tables, lung, lung_boxes=good.tolist())
    # aligned: lung boxes are not read (any value passes), the same params as without them
    aligned = DadamConfig()
    a = sample_batch(labels, tables, aligned, generator=torch.Generator().manual_seed(0), lung_boxes=good[:2])
    _assert_params_equal(a, sample_batch(labels, tables, aligned, generator=torch.Generator().manual_seed(0)))


# ---------------------------------------------------------------------------------------------------- mask


@pytest.mark.parametrize("companions", COMPANION_RULES)
def test_mask_only_masked_samples_change(bank, stats, table, companions):
    config = DadamConfig(p=0.9, companions=companions)
    tables, _ = build_tables(bank, stats, config)
    uniforms, rule = RULES[companions]
    labels = _batch(table)
    mask = torch.rand(len(labels), generator=torch.Generator().manual_seed(1)) < 0.5
    u = uniforms(config).draw(len(labels), generator=torch.Generator().manual_seed(4), device="cpu")
    free, masked = rule(labels, u, tables, config), rule(labels, u, tables, config, mask)
    assert masked.changed[mask].any() and free.changed[~mask].any()
    assert not masked.changed[~mask].any() and not masked.active[~mask].any()
    assert torch.equal(masked.labels[~mask].nan_to_num(-7), labels[~mask].nan_to_num(-7))
    _assert_params_equal(masked[mask.nonzero().flatten()], free[mask.nonzero().flatten()], "masked rows: ")
    # the module: forward and sample
    aug = DiseasedAreaAugment(bank, stats, p=1.0, companions=companions, generator=0)
    images = torch.zeros(len(labels), 1, CANVAS, CANVAS, dtype=torch.uint8)
    out, new, params = aug(images, labels, mask=mask, return_params=True)
    assert not params.changed[~mask].any() and params.changed[mask].any()
    assert torch.equal(out[~mask], images[~mask]) and not torch.equal(out[mask], images[mask])
    assert not aug.sample(labels, mask=torch.zeros_like(mask)).changed.any()


def test_mask_errors(bank, stats, table):
    aug = DiseasedAreaAugment(bank, stats, generator=0)
    labels = table[:4]
    images = torch.zeros(4, 1, CANVAS, CANVAS, dtype=torch.uint8)
    for bad, what in (
        (torch.ones(3, dtype=torch.bool), r"got shape \(3,\), dtype torch.bool, device cpu"),
        (torch.ones(4, 1, dtype=torch.bool), r"got shape \(4, 1\)"),
        (torch.ones(4), r"got shape \(4,\), dtype torch.float32"),
        (torch.ones(4, dtype=torch.bool, device="meta"), r"device meta"),
    ):
        for call in (lambda m: aug.sample(labels, mask=m), lambda m: aug(images, labels, mask=m)):
            with pytest.raises(ValueError, match=r"mask must be a \(4,\) torch.bool tensor on cpu .*" + what):
                call(bad)
    with pytest.raises(ValueError, match="mask must be a .* got list"):
        aug.sample(labels, mask=[True] * 4)
    with pytest.raises(ValueError, match="give params .* or mask, not both"):
        aug(images, labels, params=aug.sample(labels), mask=torch.ones(4, dtype=torch.bool))


# ---------------------------------------------------------------------------------------------------- tables


def test_tables_and_their_errors(bank, stats):
    tables, tail_mask = build_tables(bank, stats, DadamConfig())
    assert tables.row_classes.shape == (4000,) and tables.template_rows.dtype == torch.int32
    assert tables.template_count.dtype == torch.long and torch.equal(tables.template_count, stats.template_count)
    assert tables.class_bits.tolist()[:3] == [1, 2, 4] and tables.covered.sum() == 6
    corr_tables, _ = build_tables(bank, stats, DadamConfig(companions="correlation"))
    assert corr_tables.template_rows.numel() == 0 and corr_tables.row_classes.numel() == 0
    same = tables.to("cpu")
    assert all(a is b for a, b in zip(same.tensors().values(), tables.tensors().values(), strict=True))
    aug = DiseasedAreaAugment(bank, stats)
    for name, t in tables.tensors().items():  # the module's tables are the built ones, as buffers
        torch.testing.assert_close(getattr(aug.tables, name), t, rtol=0, atol=0, equal_nan=True, msg=name)
    assert torch.isnan(tables.patch_anchor).all()  # a bank without donor lung boxes: anchors unknown
    assert (aug.tables.canvas, aug.tables.no_finding) == (CANVAS, NF)
    bare = LabelStats(stats.freq, stats.corr, stats.class_names, stats.num_samples)
    with pytest.raises(
        ValueError, match=r"companions='cooccurrence' draws real label rows, .*LabelStats\(freq, corr\)"
    ):
        DiseasedAreaAugment(bank, bare)
    DiseasedAreaAugment(bank, bare, companions="correlation")
    names = [f"c{i}" for i in range(32)] + ["No Finding"]
    wide_bank = PatchBank.from_patches(
        [torch.zeros(3, 3, dtype=torch.uint8)], [[0, 0, 3, 3]], ["c0"], canvas=16, class_names=names
    )
    wide = LabelStats(torch.full((33,), 0.1), torch.zeros(33, 33), tuple(names), 10)
    with pytest.raises(ValueError, match="supports at most 32 classes .* got 33; use companions='correlation'"):
        DiseasedAreaAugment(wide_bank, wide, tail=["c0"])
    assert DiseasedAreaAugment(wide_bank, wide, tail=["c0"], companions="correlation").tail_names == ("c0",)
