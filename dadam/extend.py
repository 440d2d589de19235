"""The paper's epoch composition, online: ``DadamConfig(mode="extend")``.

Kim et al. (2023) add 50k pasted and 50k blended images to the 210k originals and train on the 310k. Here an epoch
is the original training set plus ``n_paste`` extra samples drawn from the normal images and ``n_blend`` drawn from
the tail-class images (:meth:`dadam.config.DadamConfig.extra_counts`); the extra samples are decoded like any other
and DADAM changes exactly them on the device, in one call per batch::

    aug = DiseasedAreaAugment(bank, stats, **config.replace(p=1.0).augment_options())
    for images, labels, ids in loader:                      # loader over an ExtendSampler
        images, labels = aug(images, labels, mask=batch.extra)   # extras pasted or blended; originals untouched

``p=1`` forces every extra sample to change; the mask keeps every original as it is. Which change an extra sample
gets follows from its labels (a normal image is pasted onto, a tail-class image blended onto), so the pools hold
only rows on which the forced change always succeeds (:func:`extend_pools`).

:class:`ExtendSampler` draws an epoch's extra rows and shuffles them in with the originals, seeded by the seed and
the epoch only, and resumes mid-epoch like :class:`dadam.data.ResumableSampler` (``set_epoch(e, start=k)``). It
serves an extra sample of row ``i`` as index ``n + i``, which :class:`dadam.data.LabelDataset` marks in
``batch.extra``.
"""

from __future__ import annotations

import math

import torch

from dadam.data import ResumableSampler
from dadam.sampling import SamplerTables

__all__ = ["ExtendSampler", "draw_rows", "extend_pools"]


def extend_pools(labels: torch.Tensor, tables: SamplerTables) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows an extend-mode epoch draws its extra samples from.

    - paste pool: the normal rows ("No Finding" and no other positive class): a forced sample is pasted onto
      (the module guarantees a tail class with patches);
    - blend pool: rows that show a class that triggers a blend (``tables.blend_tail_weight > 0``) and lack, for each
      such class, at least one of its companions (``tables.companion_weight > 0``): a forced sample always finds a
      class to blend, whichever of its tail classes is drawn.

    Args:
        labels: ``(N, C)`` training labels (1 positive, 0 negative, NaN unknown, which counts as not positive).
        tables: the sampler tables of the DADAM module (``aug.tables``), on any device.

    Returns:
        ``(paste_rows, blend_rows)``: int64 row indices on the CPU, ascending.

    Shape:
        labels ``(N, C)`` -> ``(P,)``, ``(Q,)``.
    """
    pos = labels.detach().cpu() > 0.5  # (N, C), NaN -> False
    not_nf = tables.not_nf.cpu()  # (C,)
    other = pos & not_nf  # (N, C)
    normal = pos[:, tables.no_finding] & ~other.any(1)  # (N,)
    triggers = other & (tables.blend_tail_weight.cpu() > 0)  # (N, C) classes that would start a blend
    companions = (tables.companion_weight.cpu() > 0).float()  # (C, C): row t, the companions of t
    lacking = (~pos).float() @ companions.T  # (N, C): [n, t] = companions of t that row n lacks
    blend = triggers.any(1) & ~normal & (~triggers | (lacking > 0)).all(1)  # (N,)
    return normal.nonzero().view(-1), blend.nonzero().view(-1)


def draw_rows(pool: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` rows of ``pool``: whole random permutations of it one after the other, cut at ``count``, so no row
    repeats before every row of the pool has been drawn.

    Raises:
        ValueError: ``count > 0`` and the pool is empty.
    """
    if count == 0:
        return pool.new_zeros(0)
    if len(pool) == 0:
        raise ValueError(f"cannot draw {count} extra samples from an empty pool")
    rounds = math.ceil(count / len(pool))
    order = torch.cat([torch.randperm(len(pool), generator=generator) for _ in range(rounds)])[:count]
    return pool[order]


class ExtendSampler(ResumableSampler):
    """An extend-mode epoch: the ``n`` originals plus ``n_paste`` rows of ``paste_pool`` and ``n_blend`` rows of
    ``blend_pool`` served as extra samples (index ``n + row``), shuffled together, sharded over the ranks.

    Epoch ``e`` depends only on ``(seed, e)``: the extra rows (:func:`draw_rows`) and the order come from one
    generator seeded with ``seed + e``, the same on every rank, so the shards stay disjoint; each rank takes every
    ``num_replicas``-th index of the (padded) epoch. ``set_epoch(e, start=k)`` skips the first ``k`` samples of this
    rank's share, so a resumed run sees the batches the uninterrupted run saw.

    Args:
        n: original training rows.
        paste_pool: rows to draw the pasted extras from (:func:`extend_pools`).
        blend_pool: rows to draw the blended extras from.
        n_paste: extra pasted samples per epoch.
        n_blend: extra blended samples per epoch.
        seed: base seed.
        num_replicas: ranks (default: the world size, 1 without torch.distributed).
        rank: this rank (default: the process's rank).
        drop_last: drop the tail so that every rank gets the same count without padding.

    Raises:
        ValueError: extras are asked of an empty pool (naming it and the fix).

    Example:
        >>> s = ExtendSampler(4, torch.tensor([0, 1]), torch.tensor([3]), n_paste=2, n_blend=1, seed=0)
        >>> sorted(s.indices())  # originals 0..3, then extras as 4 + row
        [0, 1, 2, 3, 4, 5, 7]
    """

    def __init__(
        self,
        n: int,
        paste_pool: torch.Tensor,
        blend_pool: torch.Tensor,
        *,
        n_paste: int,
        n_blend: int,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        drop_last: bool = False,
    ) -> None:
        for name, pool, count in (("paste", paste_pool, n_paste), ("blend", blend_pool, n_blend)):
            if count < 0:
                raise ValueError(f"n_{name} must be >= 0, got {count}")
            if count and len(pool) == 0:
                what = "normal images ('No Finding' only)" if name == "paste" else "images with a tail class to blend"
                raise ValueError(
                    f"extend mode asks for {count} extra {name} samples but the training set has no {what}; set "
                    f"extra_{name}=0 (--dadam-extra-{name} 0) or use mode='replace'"
                )
        self.paste_pool = torch.as_tensor(paste_pool, dtype=torch.long).cpu()
        self.blend_pool = torch.as_tensor(blend_pool, dtype=torch.long).cpu()
        self.n_paste, self.n_blend, self.n_original = int(n_paste), int(n_blend), int(n)
        super().__init__(
            n + self.n_paste + self.n_blend,
            shuffle=True,
            seed=seed,
            num_replicas=num_replicas,
            rank=rank,
            drop_last=drop_last,
        )

    def epoch_items(self) -> torch.Tensor:
        """The whole epoch before sharding: ``(n + n_paste + n_blend,)`` int64, originals as their row, extras as
        ``n + row``, in the epoch's order."""
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        paste = draw_rows(self.paste_pool, self.n_paste, g)  # (n_paste,)
        blend = draw_rows(self.blend_pool, self.n_blend, g)  # (n_blend,)
        items = torch.cat([torch.arange(self.n_original), paste + self.n_original, blend + self.n_original])
        return items[torch.randperm(len(items), generator=g)]

    def indices(self) -> list[int]:
        """This rank's full index list for the current epoch (without the ``start`` skip)."""
        order = self.epoch_items().tolist()
        total = self.num_samples * self.num_replicas
        if total > len(order):  # pad by wrapping around, as DistributedSampler does
            order = (order * math.ceil(total / max(len(order), 1)))[:total]
        return order[:total][self.rank :: self.num_replicas]

    def state_dict(self) -> dict:
        return {**super().state_dict(), "n_paste": self.n_paste, "n_blend": self.n_blend}
