"""The uniform numbers of one sampler call, declared once by name and shape and drawn with one ``torch.rand``.

A sampler rule declares what it draws as a :class:`UniformSpec`: a sequence of :class:`Quantity` (one number, or a
few, per sample) and :class:`Interleaved` blocks (a quantity per slot or per candidate, the numbers of one element
side by side). :meth:`UniformSpec.draw` takes one ``torch.rand(B, columns)`` and hands out named views into it
(:class:`Uniforms`), so no code keeps column offsets by hand; :meth:`UniformSpec.layout` gives the same offsets to a
kernel that reads the raw ``(B, columns)`` tensor.

Example:
    >>> spec = UniformSpec(Quantity("gate"), Quantity("jitter", 2), Interleaved((3, 4), Quantity("patch")))
    >>> u = spec.draw(5, generator=torch.Generator().manual_seed(0), device="cpu")
    >>> spec.columns, tuple(u.gate.shape), tuple(u.jitter.shape), tuple(u.patch.shape)
    (15, (5,), (5, 2), (5, 3, 4))
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch

__all__ = ["Interleaved", "Quantity", "Slice", "UniformSpec", "Uniforms"]


@dataclass(frozen=True)
class Quantity:
    """A named uniform draw: ``width`` numbers per element (1: a scalar, 2: e.g. a jitter ``(dx, dy)``)."""

    name: str
    width: int = 1


@dataclass(frozen=True)
class Interleaved:
    """Quantities drawn per element of ``shape`` (e.g. ``(slots, candidates)``), one element's numbers side by side.

    Element ``e`` (in row-major order) holds the numbers of every quantity, in the given order, at columns
    ``start + e * stride + field offset``.
    """

    shape: tuple[int, ...]
    quantities: tuple[Quantity, ...]

    def __init__(self, shape: tuple[int, ...], *quantities: Quantity) -> None:
        object.__setattr__(self, "shape", tuple(int(s) for s in shape))
        object.__setattr__(self, "quantities", tuple(quantities))


@dataclass(frozen=True)
class Slice:
    """Where a quantity lives in the raw ``(B, columns)`` tensor: element ``e``, number ``w`` of it is column
    ``start + e * stride + w`` (``e`` row-major over ``shape``)."""

    start: int
    stride: int
    shape: tuple[int, ...]
    width: int


class Uniforms(dict):
    """Named views into one ``(B, columns)`` tensor of uniforms in ``[0, 1)``: ``u.gate`` or ``u["gate"]``.

    A view has shape ``(B, *element shape)`` for a scalar quantity and ``(B, *element shape, width)`` otherwise.
    ``u.raw`` is the tensor itself (what a kernel reads, with :meth:`UniformSpec.layout`).
    """

    def __init__(self, raw: torch.Tensor, views: Mapping[str, torch.Tensor]) -> None:
        super().__init__(views)
        self.raw = raw

    def __getattr__(self, name: str) -> torch.Tensor:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"no uniform draw named {name!r}; drawn: {sorted(self)}") from None


class UniformSpec:
    """What one sampler call draws, in column order (see the module docstring).

    Args:
        *items: :class:`Quantity` (one element per sample) and :class:`Interleaved` blocks; names are unique.
    """

    def __init__(self, *items: Quantity | Interleaved) -> None:
        self.items = tuple(Interleaved((), it) if isinstance(it, Quantity) else it for it in items)
        self._layout: dict[str, Slice] = {}
        start = 0
        for block in self.items:
            stride = sum(q.width for q in block.quantities)
            offset = start
            for q in block.quantities:
                if q.name in self._layout:
                    raise ValueError(f"uniform draw {q.name!r} is declared twice")
                self._layout[q.name] = Slice(offset, stride, block.shape, q.width)
                offset += q.width
            start += stride * math.prod(block.shape)
        self.columns = start

    def __repr__(self) -> str:
        return f"UniformSpec({', '.join(f'{k}{s.shape}x{s.width}' for k, s in self._layout.items())}; {self.columns})"

    def layout(self) -> dict[str, Slice]:
        """Each quantity's :class:`Slice` of the raw tensor, by name, in column order."""
        return dict(self._layout)

    def split(self, raw: torch.Tensor) -> Uniforms:
        """Named views into ``raw`` ``(B, columns)`` (no copy)."""
        if raw.ndim != 2 or raw.shape[1] != self.columns:
            raise ValueError(f"uniforms must have shape (B, {self.columns}), got {tuple(raw.shape)}")
        B = raw.shape[0]
        views = {}
        for block in self.items:
            first = self._layout[block.quantities[0].name]
            n = math.prod(block.shape)
            cols = raw.narrow(1, first.start, first.stride * n).view(B, *block.shape, first.stride)
            for q in block.quantities:
                s = self._layout[q.name]
                field = cols.narrow(-1, s.start - first.start, q.width)  # (B, *shape, width)
                views[q.name] = field.squeeze(-1) if q.width == 1 else field
        return Uniforms(raw, views)

    def draw(self, batch: int, *, generator: torch.Generator | None, device: torch.device | str) -> Uniforms:
        """One ``torch.rand(batch, columns)`` call (the only random call of a sampler), as named views.

        Args:
            batch: samples ``B``.
            generator: a ``torch.Generator`` on ``device`` (None: torch's default generator).
            device: where to draw.

        Returns:
            the :class:`Uniforms`.
        """
        return self.split(torch.rand(batch, self.columns, generator=generator, device=device))
