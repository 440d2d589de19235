"""dadam.extend: the paper's epoch composition online (mode="extend"): exact seeded counts, pools, resume, originals
untouched and every extra sample changed by one DADAM call per batch."""

from __future__ import annotations

import pytest
import torch

from dadam import DadamConfig, DiseasedAreaAugment, LabelStats
from dadam.config import PAPER_EXTRA_FRACTION
from dadam.data import LabelBatch
from dadam.extend import ExtendSampler, draw_rows, extend_pools
from dadam.sampling import MODE_BLEND, MODE_PASTE
from tests.helpers import NF, make_bank, make_images, make_label_table

CANVAS = 64


@pytest.fixture(scope="module")
def table():
    return make_label_table(600, seed=3)


@pytest.fixture(scope="module")
def aug(table):
    config = DadamConfig(max_patches=3).replace(p=1.0)
    return DiseasedAreaAugment(
        make_bank(canvas=CANVAS), LabelStats.from_labels(table), generator=0, **config.augment_options()
    )


def _pools_by_loop(labels, aug):
    """Slow reference: per row, the sampler's own conditions for a forced paste or a forced blend."""
    bw, cw = aug.blend_tail_weight, aug.companion_weight
    paste, blend = [], []
    for i, y in enumerate(labels):
        pos = [bool(v > 0.5) for v in y]
        others = [c for c in range(26) if pos[c] and c != NF]
        if pos[NF] and not others:
            paste.append(i)
            continue
        tails = [t for t in others if bw[t] > 0]
        if tails and all(any(cw[t, j] > 0 and not pos[j] for j in range(26)) for t in tails):
            blend.append(i)
    return paste, blend


def test_extra_counts_from_counts_and_fractions():
    assert DadamConfig().mode == "extend" and DadamConfig().extra_counts(210_000) == (50_000, 50_000)
    assert DadamConfig(extra_paste=7, extra_blend=0.5).extra_counts(10) == (7, 5)
    assert DadamConfig(mode="replace").extra_counts(1000) == (0, 0)
    assert PAPER_EXTRA_FRACTION == pytest.approx(0.238095, abs=1e-6)
    # configs written before the option read as replace (the behaviour of their release)
    old = {k: v for k, v in DadamConfig().to_dict().items() if k not in ("mode", "extra_paste", "extra_blend")}
    assert DadamConfig.from_dict(old).mode == "replace"
    assert DadamConfig.from_dict(DadamConfig(extra_paste=5).to_dict()) == DadamConfig(extra_paste=5)
    with pytest.raises(ValueError, match=r"extra_paste must be a count >= 0, got -1"):
        DadamConfig(extra_paste=-1).validate()
    with pytest.raises(ValueError, match=r"extra_blend must be a fraction .* in \[0, 10\], got 11.0"):
        DadamConfig(extra_blend=11.0).validate()
    with pytest.raises(ValueError, match=r"mode must be one of \('replace', 'extend'\), got 'add'"):
        DadamConfig(mode="add").validate()


def test_pools_match_the_samplers_conditions(table, aug):
    paste, blend = extend_pools(table, aug.tables)
    ref_paste, ref_blend = _pools_by_loop(table, aug)
    assert paste.tolist() == ref_paste and blend.tolist() == ref_blend
    assert len(paste) > 100 and len(blend) > 20  # the table has both kinds


def test_draw_rows_repeats_no_row_before_the_pool_is_used_up():
    pool = torch.tensor([3, 5, 9])
    rows = draw_rows(pool, 7, torch.Generator().manual_seed(0))
    assert sorted(rows[:3].tolist()) == [3, 5, 9] and sorted(rows[3:6].tolist()) == [3, 5, 9] and len(rows) == 7
    with pytest.raises(ValueError, match="cannot draw 2 extra samples from an empty pool"):
        draw_rows(pool[:0], 2, torch.Generator())


def test_epoch_has_exact_seeded_counts_and_resumes_mid_epoch(table, aug):
    n = len(table)
    paste, blend = extend_pools(table, aug.tables)
    n_paste, n_blend = DadamConfig().extra_counts(n)
    sampler = ExtendSampler(n, paste, blend, n_paste=n_paste, n_blend=n_blend, seed=4)
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        items = torch.tensor(sampler.indices())
        originals, extras = items[items < n], items[items >= n] - n
        assert len(items) == n + n_paste + n_blend == len(sampler)
        assert sorted(originals.tolist()) == list(range(n))  # every original once
        is_paste = torch.isin(extras, paste)
        assert int(is_paste.sum()) == n_paste and bool(torch.isin(extras[~is_paste], blend).all())
        assert len(set(extras[is_paste].tolist())) == n_paste  # no repeat while the pool lasts
    sampler.set_epoch(0)
    first = sampler.indices()
    sampler.set_epoch(1)
    assert sampler.indices() != first  # a new draw each epoch
    again = ExtendSampler(n, paste, blend, n_paste=n_paste, n_blend=n_blend, seed=4)
    again.set_epoch(0, start=40)
    assert list(again) == first[40:] and len(again) == len(first) - 40  # resumed mid-epoch: the same samples
    # two ranks share the epoch without overlap
    ranks = [
        ExtendSampler(n, paste, blend, n_paste=n_paste, n_blend=n_blend, seed=4, num_replicas=2, rank=r) for r in (0, 1)
    ]
    both = ranks[0].indices() + ranks[1].indices()
    assert sorted(both) == sorted(first + first[: len(both) - len(first)])


def test_empty_pool_is_refused_naming_the_fix():
    with pytest.raises(ValueError, match=r"no normal images \('No Finding' only\); set extra_paste=0 \(--dadam-extra-paste 0\)"):
        ExtendSampler(10, torch.zeros(0, dtype=torch.long), torch.tensor([1]), n_paste=3, n_blend=1)


def test_one_dadam_call_changes_every_extra_and_no_original(table, aug):
    """A batch of originals and extras through aug(..., mask=batch.extra): originals bit-identical with their labels,
    extras from the paste pool pasted, from the blend pool blended."""
    n = len(table)
    paste, blend = extend_pools(table, aug.tables)
    sampler = ExtendSampler(n, paste, blend, n_paste=40, n_blend=40, seed=1)
    items = torch.tensor(sampler.indices())[:256]
    rows, extra = items % n, items >= n
    labels = table[rows]
    images = make_images(len(rows), 1, CANVAS, torch.uint8, seed=2)
    batch = LabelBatch(images, labels, torch.zeros(len(rows), dtype=torch.long), extra=extra)
    out, new_labels, params = aug(batch[0], batch[1], mask=batch.extra, return_params=True)
    assert torch.equal(out[~extra], images[~extra]) and torch.equal(
        new_labels[~extra],
        labels[~extra],
    )
    assert bool(params.changed[extra].all()) and not bool(params.changed[~extra].any())
    from_paste = torch.isin(rows, paste) & extra
    assert bool((params.mode[from_paste] == MODE_PASTE).all())
    assert bool((params.mode[extra & ~from_paste] == MODE_BLEND).all())
    assert int(extra.sum()) > 10 and int(from_paste.sum()) > 3
    differs = (out != images).flatten(1).any(1)
    assert bool(differs[extra].all())  # every extra sample's pixels changed
