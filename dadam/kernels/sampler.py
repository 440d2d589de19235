"""Triton kernel of the co-occurrence sampler (:func:`dadam.sampling.cooccurrence_params`): one launch per call.

Why a hand-written kernel: the torch rule is a few hundred small ops per call (each class draw, gather, candidate
and slot is its own launch), so on a GPU a batch of labels costs far more in launches than in work. The kernel does
the whole rule for ``BLOCK`` samples per program, reading the same ``(B, columns)`` uniforms as the torch function
(the one ``torch.rand`` of :func:`dadam.sampling.cooccurrence_uniforms`; their columns come in as ``layout``):

- the labels: positives as a bit mask, the 0 / 1 / NaN check (a bad value clears the ``ok`` word, see below);
- the gate (``u < p`` in float32, and the mask), the tail class ``t`` and a blend's companion ``j`` by the inverse
  CDF of the co-occurrence rule (:func:`dadam.sampling.draws.sequential_cdf`: a float64 running sum from the first
  class to the last, each partial sum rounded to float32; the class is the number of CDF values ``<= u * total``
  that are below the total), the template row and its covered classes as a bit mask, the patch of slot 0;
- with ``placement="lung"`` every box is first moved into the recipient's lung box (the anchor of its patch, a
  table, and the sample's lung box: :func:`dadam.anatomy.lung_corner`, the same float32 operations);
- per further slot, its ``candidates`` side by side (a ``(BLOCK, RP)`` tile): the class among the template's
  remaining classes (the same inverse CDF over 0 / 1 weights), the patch, the jittered box, the overlap test
  against the boxes placed so far (read back from the output after a barrier), the first fitting one kept;
- every :class:`~dadam.sampling.DadamParams` field and the new labels (the rule of
  :func:`dadam.sampling.apply_labels`), all written by the kernel, so the outputs come from ``torch.empty``.

Given the same uniforms the outputs equal the torch function's, value for value: ``u * count`` and the jitter
``(2u - 1) * jitter * canvas`` are single float32 products (the launch passes ``enable_fp_fusion=False``: no FMA),
rounding half to even by the ``1.5 * 2**23`` trick (exact below ``2**22`` pixels), integers elsewhere.

The ``ok`` word (:func:`dadam.kernels.new_ok_flag`, optional): the kernel stores 0 into it when a label is not 0, 1
or NaN, and nothing else; the caller asserts it once per forward (:func:`dadam.kernels.assert_ok`, no host sync).

On CUDA the kernel is built on its first use per variant (:func:`dadam.kernels.runtime.launch`, which raises
:class:`~dadam.kernels.KernelBuildError` when it cannot be). On CPU tensors the same kernel runs under Triton's
interpreter (numpy, one program at a time; slow, for tests), its ``@triton.jit`` helpers included, without
``TRITON_INTERPRET`` having to be set before Triton is imported. The module imports without Triton
(``HAS_TRITON`` is then False and :func:`cooccurrence_triton` raises).
"""

from __future__ import annotations

import struct
import types
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import torch

from dadam.kernels.runtime import HAS_TRITON, launch, tl, triton

if TYPE_CHECKING:
    from dadam.config import DadamConfig
    from dadam.sampling.tables import SamplerTables

__all__ = ["BLOCK", "HAS_TRITON", "LABEL_DTYPES", "OPTIONS", "cooccurrence_triton"]

BLOCK = 16  # samples per program
LABEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# Compile options of every launch: no FMA contraction (torch rounds each float32 product on its own).
OPTIONS = {"enable_fp_fusion": False, "num_warps": 4}
# The uniform draws of the co-occurrence rule the kernel reads, by name (see cooccurrence_uniforms).
_DRAWS = ("gate", "tail", "template", "companion", "patch", "jitter", "slot_class", "slot_patch", "slot_jitter")

if HAS_TRITON:

    @triton.jit
    def _min_combine(a, b):
        return tl.minimum(a, b)

    @triton.jit
    def _or_combine(a, b):
        return a | b

    @triton.jit
    def _class_draw(row, keep, u, C: tl.constexpr):
        """Inverse CDF over C classes with weights ``w[c] = row[c] * keep_c`` (the co-occurrence rule's CDF).

        row: pointers to a row of C weights; keep: int64 bit mask; u: float32 (all one shape). Returns the class
        (int64) and whether the weights have a positive total.
        """
        # Pass 1 (the total) is a loop that LLVM unrolls; pass 2 is too long for that and is unrolled here, so its
        # loads issue together. Unrolling in Triton costs compile time (its coalescing pass grows faster than the
        # code), so nothing else is.
        acc = tl.full(u.shape, 0.0, tl.float64)
        for c in range(C):
            acc += (tl.load(row + c) * ((keep >> c) & 1).to(tl.float32)).to(tl.float64)
        total = acc.to(tl.float32)
        v = u * total
        acc = tl.full(u.shape, 0.0, tl.float64)
        idx = tl.full(u.shape, 0, tl.int64)
        for c in tl.static_range(C):
            acc += (tl.load(row + c) * ((keep >> c) & 1).to(tl.float32)).to(tl.float64)
            cdf = acc.to(tl.float32)
            idx += ((cdf <= v) & (cdf < total)).to(tl.int64)
        return idx, total > 0

    @triton.jit
    def _bit_draw(bits, u, C: tl.constexpr):
        """Inverse CDF over the classes of a bit mask, each with weight 1.

        bits: int64 bit masks; u: float32 (the same shape). Returns the class (int64).
        """
        n = bits & 0
        for c in range(C):
            n += (bits >> c) & 1
        total = n.to(tl.float32)
        v = u * total
        cum = bits & 0
        idx = tl.full(u.shape, 0, tl.int64)
        for c in range(C):
            cum += (bits >> c) & 1
            cdf = cum.to(tl.float32)
            idx += ((cdf <= v) & (cdf < total)).to(tl.int64)
        return idx

    @triton.jit
    def _pick(start_ptr, count_ptr, last_ptr, cls, u):
        """Entry ``start[cls] + min(floor(u * count[cls]), last[cls])`` of a per-class range (any shape)."""
        draw = (u * tl.load(count_ptr + cls).to(tl.float32)).to(tl.int64)
        return tl.load(start_ptr + cls) + tl.minimum(draw, tl.load(last_ptr + cls))

    @triton.jit
    def _shift(u, shift):
        """``round((2 u - 1) * shift)``, half to even, as int64 (|value| < 2**22)."""
        return _round((2.0 * u - 1.0) * shift)

    @triton.jit
    def _round(v):
        """float32 ``v`` rounded half to even, as int64 (|v| < 2**22)."""
        return ((v + 12582912.0) - 12582912.0).to(tl.int64)

    @triton.jit
    def _place(boxes_ptr, anchor_ptr, lung_row, pid, ux, uy, shift, canvas, JITTER: tl.constexpr, LUNG: tl.constexpr):
        """The box of bank patch ``pid``: aligned, or (LUNG) its anchor placed in the recipient's lung box at
        ``lung_row`` (:func:`dadam.anatomy.lung_corner`, kept aligned where either is NaN); shifted by the jitter and
        kept inside the canvas: (x0, y0, x1, y1)."""
        x0 = tl.load(boxes_ptr + 4 * pid)
        y0 = tl.load(boxes_ptr + 4 * pid + 1)
        x1 = tl.load(boxes_ptr + 4 * pid + 2)
        y1 = tl.load(boxes_ptr + 4 * pid + 3)
        if LUNG:
            w = x1 - x0
            h = y1 - y0
            lx0 = tl.load(lung_row)
            ly0 = tl.load(lung_row + 1)
            lx1 = tl.load(lung_row + 2)
            ly1 = tl.load(lung_row + 3)
            cx = lx0 + tl.load(anchor_ptr + 2 * pid) * (lx1 - lx0)  # three float32 operations, as torch
            cy = ly0 + tl.load(anchor_ptr + 2 * pid + 1) * (ly1 - ly0)
            px = cx * canvas - w.to(tl.float32) * 0.5
            py = cy * canvas - h.to(tl.float32) * 0.5
            known = (px == px) & (py == py)  # neither is NaN
            x0 = tl.where(known, tl.minimum(tl.maximum(_round(tl.where(known, px, 0.0)), 0), canvas - w), x0)
            y0 = tl.where(known, tl.minimum(tl.maximum(_round(tl.where(known, py, 0.0)), 0), canvas - h), y0)
            x1 = x0 + w
            y1 = y0 + h
        if JITTER:
            w = x1 - x0
            h = y1 - y0
            x0 = tl.minimum(tl.maximum(x0 + _shift(ux, shift), 0), canvas - w)
            y0 = tl.minimum(tl.maximum(y0 + _shift(uy, shift), 0), canvas - h)
            x1 = x0 + w
            y1 = y0 + h
        return x0, y0, x1, y1

    @triton.jit(do_not_specialize=["B"])
    def _cooccurrence_kernel(
        labels_ptr,  # (B, C) labels (float), strides stride_lb, stride_lc
        u_ptr,  # (B, U) float32 uniforms, contiguous
        mask_ptr,  # (B,) uint8 (read if HAS_MASK)
        ok_ptr,  # (1,) int32 (written if CHECK)
        tail_w_ptr,  # (C,) tail-class weights of a paste
        blend_w_ptr,  # (C,) tail-class weights of a blend
        comp_w_ptr,  # (C, C) companion weights P(j | t)
        boxes_ptr,  # (N, 4) int64 the bank's aligned boxes
        anchor_ptr,  # (N, 2) float32 the patches' lung anchors (read if LUNG)
        lung_ptr,  # (B, 4) float32 the recipients' lung boxes, contiguous (read if LUNG)
        patch_start_ptr,  # (C,) int64
        patch_count_ptr,  # (C,) int64
        patch_last_ptr,  # (C,) int64
        covered_ptr,  # (C,) uint8
        rows_ptr,  # (P,) int32 label rows sorted by class
        row_start_ptr,  # (C,) int64
        row_count_ptr,  # (C,) int64
        row_last_ptr,  # (C,) int64
        row_classes_ptr,  # (M,) int32 class bit mask of each label row
        out_boxes_ptr,  # (B, K, 4) int64
        out_pids_ptr,  # (B, K) int64
        out_classes_ptr,  # (B, K) int64
        out_active_ptr,  # (B, K) uint8
        out_alpha_ptr,  # (B, K) float32
        out_mode_ptr,  # (B,) int64
        out_changed_ptr,  # (B,) uint8
        out_labels_ptr,  # (B, C) contiguous, the labels' dtype
        out_template_ptr,  # (B,) int64
        out_dropped_ptr,  # (B,) int64
        B,
        stride_lb,
        stride_lc,
        p,  # float32
        alpha,  # float32
        blend_label,  # float32, the label of a blended class (1, or alpha in the labels' dtype)
        shift,  # float32, jitter * canvas
        canvas,
        C: tl.constexpr,
        NF: tl.constexpr,  # index of "No Finding"
        K: tl.constexpr,  # slots
        R: tl.constexpr,  # candidates per slot
        RP: tl.constexpr,  # R rounded up to a power of 2
        CP: tl.constexpr,  # C rounded up to a power of 2
        U: tl.constexpr,  # columns of the uniforms
        U_GATE: tl.constexpr,
        U_TAIL: tl.constexpr,
        U_TEMPLATE: tl.constexpr,
        U_COMPANION: tl.constexpr,
        U_PATCH: tl.constexpr,
        U_JITTER: tl.constexpr,
        U_SLOT_CLASS: tl.constexpr,
        U_SLOT_PATCH: tl.constexpr,
        U_SLOT_JITTER: tl.constexpr,
        U_SLOT_STRIDE: tl.constexpr,
        HAS_MASK: tl.constexpr,
        CHECK: tl.constexpr,
        JITTER: tl.constexpr,
        LUNG: tl.constexpr,  # placement="lung"
        BLOCK: tl.constexpr,
    ):
        # Only triton.language builtins and this module's @jit helpers: the CPU path runs this function under
        # InterpretedFunction without TRITON_INTERPRET, where triton's own @jit helpers (tl.sum, tl.zeros, ...)
        # cannot be called; reductions go through tl.reduce with the combine functions above.
        # The draws run on (BLOCK, RP) tiles, row = sample, column = candidate: per-sample values repeat along the
        # row, so they share the candidates' layout (no conversions) and one column (lead) writes them. The labels
        # are read and written as one (BLOCK, CP) tile.
        r = tl.arange(0, RP)[None, :]  # (1, RP) candidate
        b = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)[:, None] + r * 0  # (BLOCK, RP) sample
        valid = b < B
        lead = valid & (r == 0)
        b = b.to(tl.int64)
        one = (b & 0) + 1  # (BLOCK, RP) int64
        u_row = u_ptr + b * U  # (BLOCK, RP) pointers to the sample's uniforms
        lung_row = lung_ptr + 4 * tl.where(valid, b, 0)  # (BLOCK, RP) pointers to the sample's lung box

        # The labels as one (BLOCK, CP) tile: positives as a bit mask (> 0.5; NaN is not positive), the check.
        sample = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)[:, None]  # (BLOCK, 1)
        cc = tl.arange(0, CP)[None, :]  # (1, CP) class
        bit = ((cc & 0) + 1).to(tl.int64) << cc  # (1, CP) int64, 1 << class
        in_labels = (sample < B) & (cc < C)  # (BLOCK, CP)
        label_ptrs = labels_ptr + sample.to(tl.int64) * stride_lb + cc * stride_lc  # (BLOCK, CP)
        x = tl.load(label_ptrs, mask=in_labels, other=0.0)  # (BLOCK, CP) in the labels' dtype
        pos = tl.reduce(tl.where(x > 0.5, bit, 0), 1, _or_combine, keep_dims=True)  # (BLOCK, 1)
        if CHECK:
            bad = in_labels & (x != 0.0) & (x != 1.0) & (x == x)  # (BLOCK, CP) not 0, 1 or NaN
            tl.store(ok_ptr + (sample & 0) + (cc & 0), 0, mask=bad)  # only ever 0: programs cannot conflict
        others = pos & ~(1 << NF)  # positives other than "No Finding"
        normal = (((pos >> NF) & 1) != 0) & (others == 0)
        gate = valid & (tl.load(u_row + U_GATE, mask=valid, other=1.0) < p)
        if HAS_MASK:
            gate = gate & (tl.load(mask_ptr + b, mask=valid, other=0) != 0)

        # The tail class t (paste: tail_weight; blend: the image's own tail classes) and a blend's companion j.
        u_tail = tl.load(u_row + U_TAIL, mask=valid, other=0.0)
        # a normal image: tail_weight (times 1, as torch.where takes it); else blend_tail_weight * its tail classes
        tail_row = tl.where(normal, tail_w_ptr + (b & 0), blend_w_ptr + (b & 0))
        t, ok_t = _class_draw(tail_row, tl.where(normal, -1, others), u_tail, C)
        u_comp = tl.load(u_row + U_COMPANION, mask=valid, other=0.0)
        j, ok_j = _class_draw(comp_w_ptr + t * C, ~pos, u_comp, C)  # P(j | t) over the classes it lacks
        active0 = gate & ok_t & (normal | ok_j)
        paste = active0 & normal
        blend = active0 & ~normal

        # The template: a uniform row among those showing t; its other covered classes are the companions.
        is_covered = tl.load(covered_ptr + cc, mask=cc < C, other=0) != 0  # (1, CP)
        covered = tl.reduce(tl.where(is_covered, bit, 0), 1, _or_combine, keep_dims=True)  # (1, 1) bit mask
        has_rows = paste & (tl.load(row_count_ptr + t) > 0)
        u_template = tl.load(u_row + U_TEMPLATE, mask=valid, other=0.0)
        entry = _pick(row_start_ptr, row_count_ptr, row_last_ptr, t, u_template)
        row = tl.where(has_rows, tl.load(rows_ptr + entry).to(tl.int64), -1)
        row_bits = tl.load(row_classes_ptr + tl.maximum(row, 0)).to(tl.int64)
        remaining = tl.where(has_rows, row_bits & covered & ~(one << t), 0)  # bit mask of the classes to place

        # Slot 0: t for a paste, j for a blend.
        cls0 = tl.where(paste, t, j)
        u_patch = tl.load(u_row + U_PATCH, mask=valid, other=0.0)
        pid0 = _pick(patch_start_ptr, patch_count_ptr, patch_last_ptr, cls0, u_patch)
        ux = tl.load(u_row + U_JITTER, mask=valid, other=0.5)
        uy = tl.load(u_row + U_JITTER + 1, mask=valid, other=0.5)
        x0, y0, x1, y1 = _place(boxes_ptr, anchor_ptr, lung_row, pid0, ux, uy, shift, canvas, JITTER, LUNG)
        slot = b * K
        tl.store(out_boxes_ptr + 4 * slot, tl.where(active0, x0, 0), mask=lead)
        tl.store(out_boxes_ptr + 4 * slot + 1, tl.where(active0, y0, 0), mask=lead)
        tl.store(out_boxes_ptr + 4 * slot + 2, tl.where(active0, x1, 0), mask=lead)
        tl.store(out_boxes_ptr + 4 * slot + 3, tl.where(active0, y1, 0), mask=lead)
        tl.store(out_pids_ptr + slot, tl.where(active0, pid0, 0), mask=lead)
        tl.store(out_classes_ptr + slot, tl.where(active0, cls0, -1), mask=lead)
        tl.store(out_active_ptr + slot, active0.to(tl.uint8), mask=lead)
        tl.store(out_alpha_ptr + slot, tl.where(active0, tl.where(blend, alpha, 1.0), 0.0), mask=lead)
        pasted = tl.where(paste, one << cls0, 0)  # bit mask of the classes placed on a paste

        # Slots 1 .. K-1: the R candidates side by side, the first that overlaps no placed box is kept.
        for k in tl.static_range(1, K):
            tl.debug_barrier()  # the boxes of the earlier slots are in out_boxes
            col = u_row + ((k - 1) * R + r) * U_SLOT_STRIDE  # (BLOCK, RP) pointers to the candidate's uniforms
            in_tile = valid & (r < R)
            cls = _bit_draw(remaining, tl.load(col + U_SLOT_CLASS, mask=in_tile, other=0.0), C)
            u_patch = tl.load(col + U_SLOT_PATCH, mask=in_tile, other=0.0)
            pid = _pick(patch_start_ptr, patch_count_ptr, patch_last_ptr, cls, u_patch)
            ux = tl.load(col + U_SLOT_JITTER, mask=in_tile, other=0.5)
            uy = tl.load(col + U_SLOT_JITTER + 1, mask=in_tile, other=0.5)
            cx0, cy0, cx1, cy1 = _place(boxes_ptr, anchor_ptr, lung_row, pid, ux, uy, shift, canvas, JITTER, LUNG)
            fits = in_tile
            for i in tl.static_range(k):
                placed = out_boxes_ptr + 4 * (b * K + i)
                px0 = tl.load(placed, mask=valid, other=0)
                py0 = tl.load(placed + 1, mask=valid, other=0)
                px1 = tl.load(placed + 2, mask=valid, other=0)
                py1 = tl.load(placed + 3, mask=valid, other=0)
                hit = (tl.maximum(cx0, px0) < tl.minimum(cx1, px1)) & (tl.maximum(cy0, py0) < tl.minimum(cy1, py1))
                fits = fits & ~hit
            first = tl.reduce(tl.where(fits, r, RP), 1, _min_combine, keep_dims=True)  # (BLOCK, 1) first that fits
            accept = valid & (remaining != 0) & (first < RP)
            take = (r == first) & accept  # at most one candidate per row
            slot = b * K + k
            tl.store(out_boxes_ptr + 4 * slot, cx0, mask=take)
            tl.store(out_boxes_ptr + 4 * slot + 1, cy0, mask=take)
            tl.store(out_boxes_ptr + 4 * slot + 2, cx1, mask=take)
            tl.store(out_boxes_ptr + 4 * slot + 3, cy1, mask=take)
            tl.store(out_pids_ptr + slot, pid, mask=take)
            tl.store(out_classes_ptr + slot, cls, mask=take)
            empty = lead & ~accept
            for e in tl.static_range(4):
                tl.store(out_boxes_ptr + 4 * slot + e, one & 0, mask=empty)
            tl.store(out_pids_ptr + slot, one & 0, mask=empty)
            tl.store(out_classes_ptr + slot, (one & 0) - 1, mask=empty)
            tl.store(out_active_ptr + slot, accept.to(tl.uint8), mask=lead)
            tl.store(out_alpha_ptr + slot, tl.where(accept, 1.0, 0.0), mask=lead)  # only pastes fill these slots
            placed_bit = tl.reduce(tl.where(take, one << cls, 0), 1, _or_combine, keep_dims=True)  # (BLOCK, 1)
            remaining &= ~placed_bit
            pasted |= placed_bit

        dropped = one & 0
        for c in range(C):
            dropped += (remaining >> c) & 1
        tl.store(out_mode_ptr + b, tl.where(paste, 1, tl.where(blend, 2, 0)).to(tl.int64), mask=lead)
        tl.store(out_changed_ptr + b, active0.to(tl.uint8), mask=lead)
        tl.store(out_template_ptr + b, row, mask=lead)
        tl.store(out_dropped_ptr + b, dropped, mask=lead)

        # The new labels (apply_labels): a paste has exactly its placed classes, a blend gains class cls0. The
        # per-sample values go from the candidate tile's rows to the label tile's as one packed word per row.
        packed = tl.where(paste, 1, tl.where(blend, 2, 0)).to(tl.int64) | (cls0 << 2) | (pasted << 7)
        packed = tl.reduce(tl.where(r == 0, packed, 0), 1, _or_combine, keep_dims=True)  # (BLOCK, 1)
        hot = ((packed >> 7) & bit) != 0  # (BLOCK, CP) a placed class of a paste
        gained = ((packed & 3) == 2) & (((packed >> 2) & 31) == cc)  # (BLOCK, CP) the class a blend gains
        if not x.dtype.is_fp64():
            x = x.to(tl.float32)  # exact; the value written is then exact too (a copy, 0, 1 or blend_label)
        y = tl.where((packed & 3) == 1, tl.where(hot, 1.0, 0.0), tl.where(gained, blend_label, x))
        tl.store(out_labels_ptr + sample.to(tl.int64) * C + cc, y, mask=in_labels)

    _interpreted_kernel = None

    def _interpreted():
        """The kernel under Triton's interpreter (CPU tensors), its @jit helpers interpreted too: a copy of this
        module's namespace maps each helper to its InterpretedFunction (the module itself stays untouched)."""
        global _interpreted_kernel
        if _interpreted_kernel is None:
            from triton.runtime.interpreter import InterpretedFunction
            from triton.runtime.jit import JITFunction

            scope = dict(globals())
            for name, jit_fn in list(scope.items()):
                if isinstance(jit_fn, JITFunction):
                    fn = jit_fn.fn
                    scope[name] = InterpretedFunction(types.FunctionType(fn.__code__, scope, name, fn.__defaults__))
            _interpreted_kernel = scope["_cooccurrence_kernel"]
        return _interpreted_kernel


def _float32_as(value: float, dtype: torch.dtype) -> float:
    """``float32(value)`` rounded to ``dtype`` (nearest, ties to even, as ``Tensor.to``), on the host with no tensor
    (so no device and no fake-tensor mode is involved). For finite values."""
    bits = struct.unpack("<I", struct.pack("<f", value))[0]  # float32 bits
    if dtype == torch.float16:
        return float(np.float16(struct.unpack("<f", struct.pack("<I", bits))[0]))
    if dtype == torch.bfloat16:
        bits = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
    return struct.unpack("<f", struct.pack("<I", bits))[0]


def cooccurrence_triton(
    labels: torch.Tensor,
    uniforms: torch.Tensor,
    tables: SamplerTables,
    config: DadamConfig,
    *,
    layout: Mapping[str, object],
    mask: torch.Tensor | None = None,
    ok: torch.Tensor | None = None,
    lung_boxes: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The co-occurrence rule in one Triton launch (see the module docstring); no host sync.

    :func:`dadam.sampling.sample_batch` calls this on CUDA; the arguments are checked there (the ``uniforms`` of
    :func:`~dadam.sampling.cooccurrence_uniforms` for these options, tables with label rows on the labels' device).

    Args:
        labels: ``(B, C)`` float labels (any strides), ``C <= 32``; a dtype of :data:`LABEL_DTYPES`.
        uniforms: ``(B, columns)`` float32 contiguous, the raw uniforms.
        tables: the :class:`~dadam.sampling.SamplerTables` (contiguous tensors), on the labels' device.
        layout: the uniforms' :meth:`~dadam.sampling.UniformSpec.layout` (``start`` and ``stride`` of each draw).
        config: the options (``p``, ``alpha``, ``max_patches``, ``candidates``, ``jitter``, ``soft_label``; the
            placement follows ``lung_boxes``).
        mask: ``(B,)`` bool, the samples that may change (None: all).
        ok: ``(1,)`` int32 ``ok`` word; 0 is stored into it when a label is not 0, 1 or NaN (None: no check).
        lung_boxes: ``(B, 4)`` float32 contiguous recipients' lung boxes: ``placement="lung"`` (with the tables'
            ``patch_anchor``); None: aligned boxes.

    Returns:
        the :class:`~dadam.sampling.DadamParams` fields by name, new tensors on the labels' device.

    Shape:
        labels ``(B, C)`` -> boxes ``(B, K, 4)``, patch_ids / classes / active / alpha ``(B, K)``, mode / changed /
        template / dropped ``(B,)``, labels ``(B, C)``.
    """
    if not HAS_TRITON:
        raise RuntimeError("the co-occurrence sampler kernel needs the 'triton' package")
    B, C = labels.shape
    K, R = int(config.max_patches), int(config.candidates)
    p, alpha, jitter = config.p, config.alpha, config.jitter
    dev = labels.device
    out = {
        "boxes": torch.empty(B, K, 4, dtype=torch.long, device=dev),
        "patch_ids": torch.empty(B, K, dtype=torch.long, device=dev),
        "classes": torch.empty(B, K, dtype=torch.long, device=dev),
        "active": torch.empty(B, K, dtype=torch.bool, device=dev),
        "alpha": torch.empty(B, K, dtype=torch.float32, device=dev),
        "mode": torch.empty(B, dtype=torch.long, device=dev),
        "changed": torch.empty(B, dtype=torch.bool, device=dev),
        "labels": torch.empty(B, C, dtype=labels.dtype, device=dev),
        "template": torch.empty(B, dtype=torch.long, device=dev),
        "dropped": torch.empty(B, dtype=torch.long, device=dev),
    }
    if B == 0:
        return out
    args = (
        labels,
        uniforms,
        uniforms if mask is None else mask.contiguous().view(torch.uint8),  # a copy only for a strided mask
        uniforms if ok is None else ok,
        tables.tail_weight,
        tables.blend_tail_weight,
        tables.companion_weight,
        tables.patch_boxes,
        tables.patch_anchor,
        uniforms if lung_boxes is None else lung_boxes,
        tables.patch_start,
        tables.patch_count,
        tables.patch_last,
        tables.covered.view(torch.uint8),
        tables.template_rows,
        tables.template_start,
        tables.template_count,
        tables.template_last,
        tables.row_classes,
        *(out[name] if out[name].dtype != torch.bool else out[name].view(torch.uint8) for name in out),
    )
    # the label of a blended class as apply_labels has it (float32 alpha in the labels' dtype), computed here: the
    # interpreter's float32 -> bfloat16 cast truncates where the GPU's rounds, a value of that dtype casts exactly
    blend_label = _float32_as(alpha, labels.dtype) if config.soft_label else 1.0
    scalars = (B, *labels.stride(), float(p), float(alpha), blend_label, float(jitter * tables.canvas), tables.canvas)
    constexprs = {
        "C": C,
        "NF": int(tables.no_finding),
        "K": K,
        "R": R,
        "RP": triton.next_power_of_2(R),
        "CP": triton.next_power_of_2(C),
        "U": uniforms.shape[1],
        **{f"U_{name.upper()}": int(layout[name].start) for name in _DRAWS},
        "U_SLOT_STRIDE": int(layout["slot_class"].stride),
        "HAS_MASK": mask is not None,
        "CHECK": ok is not None,
        "JITTER": jitter > 0,
        "LUNG": lung_boxes is not None,
        "BLOCK": BLOCK,
    }
    grid = (triton.cdiv(B, BLOCK),)
    if dev.type == "cpu":
        _interpreted()[grid](*args, *scalars, **constexprs, **OPTIONS)
    else:  # built on first use (dadam.kernels.runtime.KernelBuildError if it cannot be), then launched
        launch(_cooccurrence_kernel, grid, (*args, *scalars), {**constexprs, **OPTIONS}, dev)
    return out
