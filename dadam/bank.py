"""The patch bank: disease patches cut from box-annotated chest X-rays, laid out for batched pasting.

Layout (N patches, P pixels in all), sorted by class so a random patch of class ``c`` is
``class_start[c] + floor(u * class_count[c])`` with ``u ~ U[0, 1)``, without a host sync:

- ``pixels (P,)`` uint8: every patch's grayscale pixels, row-major, one patch after the other;
- ``offsets (N,)`` long: where each patch starts in ``pixels``;
- ``sizes (N, 2)`` long: ``(h, w)`` of each patch;
- ``boxes (N, 4)`` long: where each patch was cut on the canvas, xyxy, half-open (so ``h = y1 - y0``);
- ``norm_boxes (N, 4)`` float32: the same region in normalised donor coordinates in ``[0, 1]`` (before rounding);
- ``classes (N,)`` long: CXR-LT class index (non-decreasing);
- ``lung_boxes (N, 4)`` float32: the lung-field box of each patch's donor, normalised xyxy (``placement="lung"``,
  :mod:`dadam.anatomy`), NaN rows where unknown (banks of format version 1: all);
- ``class_start (C + 1,)`` / ``class_count (C,)`` long: first patch and number of patches of each class;
- python side: ``canvas`` (int), ``max_size`` ``(h, w)`` ints, ``donors`` / ``sources`` (N str), ``report``.
"""

from __future__ import annotations

import json
import logging
import math
import operator
import os
import pathlib
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

from dadam.anatomy import LUNG_BOX_COLUMNS, lung_box, lung_box_errors
from dadam.files import atomic_write, read_safetensors, tensor_digest
from dadam.labels import CXR_LT_CLASSES, class_index

__all__ = ["BankReport", "PatchBank"]

logger = logging.getLogger(__name__)

FORMAT_NAME = "dadam.PatchBank"
FORMAT_VERSION = 2
# Version 1 has no lung boxes (they load as unknown); a bank without any is still written as version 1, the same bytes.
_VERSIONS = ("1", "2")
_TENSORS = ("pixels", "offsets", "sizes", "boxes", "norm_boxes", "classes")
_DESCRIPTION = ("canvas", "donors", "sources", "class_names", "report")  # what a bank holds besides its tensors


@dataclass
class BankReport:
    """What :meth:`PatchBank.from_boxes` did: donors read, patches kept, and what was skipped and why.

    Attributes:
        donors_read: number of donor images decoded.
        patches: number of patches kept.
        skipped_donors: ``(donor path, reason)`` for each donor that could not be read (its boxes are dropped).
        skipped_boxes: ``(donor, row, reason)`` for each box that was dropped (e.g. empty after clipping).
    """

    donors_read: int = 0
    patches: int = 0
    skipped_donors: list[tuple[str, str]] = field(default_factory=list)
    skipped_boxes: list[tuple[str, int, str]] = field(default_factory=list)

    def summary(self) -> str:
        """One human-readable paragraph."""
        lines = [
            f"{self.patches} patches from {self.donors_read} donors; "
            f"{len(self.skipped_donors)} donors and {len(self.skipped_boxes)} boxes skipped"
        ]
        lines += [f"  skipped donor {d}: {r}" for d, r in self.skipped_donors]
        lines += [f"  skipped box row {i} of {d}: {r}" for d, i, r in self.skipped_boxes]
        return "\n".join(lines)


def _bank_digest(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, str]) -> str:
    """The SHA-256 a bank file stores: its tensors and its metadata entries (all but ``sha256``, as ``key=value;``)."""
    return tensor_digest(tensors, extra="".join(f"{key}={meta[key]};" for key in sorted(meta) if key != "sha256"))


class PatchBank:
    """Disease patches on a square training canvas, in one flat buffer (see the module docstring for the layout).

    Build one with :meth:`from_boxes` (real box tables), :meth:`from_patches` (tensors, e.g. tests) or
    :meth:`load`. A bank is immutable; :meth:`to` returns a new bank.

    Example:
        >>> patches = [torch.full((4, 6), 200, dtype=torch.uint8), torch.full((3, 3), 90, dtype=torch.uint8)]
        >>> bank = PatchBank.from_patches(patches, [[0, 0, 6, 4], [10, 10, 13, 13]], ["Fibrosis", "Mass"], canvas=32)
        >>> len(bank), bank.max_size, bank.class_counts()["Mass"]
        (2, (4, 6), 1)
    """

    def __init__(
        self,
        *,
        pixels: torch.Tensor,
        offsets: torch.Tensor,
        sizes: torch.Tensor,
        boxes: torch.Tensor,
        norm_boxes: torch.Tensor,
        classes: torch.Tensor,
        canvas: int,
        donors: Sequence[str],
        sources: Sequence[str],
        class_names: Sequence[str] = CXR_LT_CLASSES,
        report: BankReport | None = None,
        lung_boxes: torch.Tensor | None = None,
    ) -> None:
        n = int(classes.shape[0])
        if lung_boxes is None:
            lung_boxes = torch.full((n, 4), float("nan"), device=classes.device)
        for name, t, shape in (
            ("offsets", offsets, (n,)),
            ("sizes", sizes, (n, 2)),
            ("boxes", boxes, (n, 4)),
            ("norm_boxes", norm_boxes, (n, 4)),
            ("lung_boxes", lung_boxes, (n, 4)),
        ):
            if tuple(t.shape) != shape:
                raise ValueError(f"{name} must have shape {shape}, got {tuple(t.shape)}")
        if pixels.ndim != 1 or pixels.dtype != torch.uint8:
            raise ValueError(f"pixels must be a flat uint8 tensor, got {pixels.dtype} {tuple(pixels.shape)}")
        if len(donors) != n or len(sources) != n:
            raise ValueError(f"donors and sources need {n} entries, got {len(donors)} and {len(sources)}")
        if n and bool((classes[1:] < classes[:-1]).any()):
            raise ValueError("classes must be sorted (non-decreasing); build banks with from_patches")
        self.pixels = pixels
        self.offsets = offsets.long()
        self.sizes = sizes.long()
        self.boxes = boxes.long()
        self.norm_boxes = norm_boxes.float()
        self.classes = classes.long()
        self.lung_boxes = lung_boxes.to(torch.float32)
        self.canvas = int(canvas)
        self.donors = list(donors)
        self.sources = list(sources)
        self.class_names = tuple(class_names)
        self.report = report if report is not None else BankReport(patches=n)
        num_classes = len(self.class_names)
        self.class_count = torch.bincount(self.classes, minlength=num_classes)[:num_classes]
        self.class_start = torch.zeros(num_classes + 1, dtype=torch.long, device=self.classes.device)
        self.class_start[1:] = torch.cumsum(self.class_count, 0)
        sizes_cpu = self.sizes.cpu()
        self.max_size = (int(sizes_cpu[:, 0].max()), int(sizes_cpu[:, 1].max())) if n else (0, 0)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_patches(
        cls,
        patches: Sequence[torch.Tensor],
        boxes,
        classes: Sequence[str | int],
        *,
        canvas: int,
        norm_boxes=None,
        donors: Sequence[str] | None = None,
        sources: Sequence[str] | None = None,
        class_names: Sequence[str] = CXR_LT_CLASSES,
        report: BankReport | None = None,
        lung_boxes=None,
    ) -> PatchBank:
        """A bank from a list of patches, in any class order (they are sorted by class, stably).

        Args:
            patches: N uint8 tensors ``(h, w)`` or ``(1, h, w)``.
            boxes: ``(N, 4)`` canvas pixel boxes xyxy half-open where each patch sits; ``(y1-y0, x1-x0)`` must
                equal the patch's ``(h, w)`` and the box must lie inside the canvas.
            classes: N class names or indices into ``class_names``.
            canvas: side of the square canvas the boxes refer to.
            norm_boxes: optional ``(N, 4)`` normalised boxes; default ``boxes / canvas``.
            donors: optional N donor ids (default ``""``); sources: optional N source names (default ``""``).
            class_names: the class list (default CXR-LT).
            report: optional build report to keep.
            lung_boxes: optional ``(N, 4)`` lung boxes of the patches' donors, normalised xyxy (NaN rows: unknown;
                default: all unknown, which ``placement="lung"`` refuses).

        Returns:
            the :class:`PatchBank`.
        """
        n = len(patches)
        boxes_t = torch.as_tensor(boxes, dtype=torch.long).reshape(n, 4)
        if n != len(classes):
            raise ValueError(f"need one class per patch: {n} patches, {len(classes)} classes")
        names = list(class_names)
        classes = [c if isinstance(c, str) else operator.index(c) for c in classes]  # numpy / torch ints too
        for c in classes:
            if not (c in names if isinstance(c, str) else 0 <= c < len(names)):
                raise ValueError(f"unknown class {c!r}; expected an index < {len(names)} or one of {names}")
        cls_idx = torch.tensor([names.index(c) if isinstance(c, str) else c for c in classes], dtype=torch.long)
        flat = []
        for i, (p, b) in enumerate(zip(patches, boxes_t, strict=True)):
            p = torch.as_tensor(p)
            if p.ndim == 3 and p.shape[0] == 1:
                p = p[0]
            if p.ndim != 2 or p.dtype != torch.uint8:
                raise ValueError(f"patch {i} must be uint8 (h, w), got {p.dtype} {tuple(p.shape)}")
            x0, y0, x1, y1 = (int(v) for v in b)
            if (y1 - y0, x1 - x0) != tuple(p.shape):
                raise ValueError(f"patch {i}: box {[x0, y0, x1, y1]} does not match patch size {tuple(p.shape)}")
            if x0 < 0 or y0 < 0 or x1 > canvas or y1 > canvas or x1 <= x0 or y1 <= y0:
                raise ValueError(f"patch {i}: box {[x0, y0, x1, y1]} is empty or outside the {canvas}x{canvas} canvas")
            flat.append(p.reshape(-1))
        order = torch.argsort(cls_idx, stable=True) if n else torch.zeros(0, dtype=torch.long)
        sizes = (boxes_t[:, [3, 2]] - boxes_t[:, [1, 0]])[order]
        numels = sizes[:, 0] * sizes[:, 1]
        offsets = torch.zeros(n, dtype=torch.long)
        if n:
            offsets[1:] = torch.cumsum(numels, 0)[:-1]
        pixels = torch.cat([flat[i] for i in order.tolist()]) if n else torch.zeros(0, dtype=torch.uint8)
        nb = boxes_t.float() / canvas if norm_boxes is None else torch.as_tensor(norm_boxes, dtype=torch.float32)
        donors = [""] * n if donors is None else list(donors)
        sources = [""] * n if sources is None else list(sources)
        lungs = None
        if lung_boxes is not None:
            lungs = torch.as_tensor(lung_boxes, dtype=torch.float32).reshape(n, 4)
            _check_lungs(lungs)
            lungs = lungs[order]
        return cls(
            pixels=pixels,
            offsets=offsets,
            sizes=sizes,
            boxes=boxes_t[order],
            norm_boxes=nb.reshape(n, 4)[order],
            classes=cls_idx[order],
            canvas=canvas,
            donors=[donors[i] for i in order.tolist()],
            sources=[sources[i] for i in order.tolist()],
            class_names=class_names,
            report=report if report is not None else BankReport(patches=n),
            lung_boxes=lungs,
        )

    @classmethod
    def from_boxes(
        cls,
        boxes,
        image_root: str | os.PathLike | Mapping[str, str | os.PathLike],
        *,
        canvas: int = 448,
        margin: float = 0.0,
        workers: int | None = None,
        progress: bool = True,
        sources: Sequence[str] | None = None,
    ) -> PatchBank:
        """Cut every box of a box table out of its donor image resized to ``canvas x canvas``.

        A donor of ``W x H`` pixels is resized (torchvision ``resize``, antialias) to ``canvas x canvas``; a box is
        scaled by ``canvas / width`` and ``canvas / height`` using the table's ``width``/``height`` when known
        (the size the coordinates refer to), else the decoded image size. The box grows by ``margin`` times its
        width/height on each side, is clipped to the image, and is rounded outwards to whole canvas pixels.

        Args:
            boxes: a box table (``image_id, label, x0, y0, x1, y1, width, height, source``; see the box contract),
                optionally with the donors' lung boxes (``lung_x0, lung_y0, lung_x1, lung_y1``, normalised; empty
                where unknown).
            image_root: folder of the images (path = ``image_root / image_id``), or a mapping
                ``source -> folder`` to mix datasets.
            canvas: side of the square training canvas in pixels.
            margin: extra context around each box, as a fraction of the box size, per side (``>= 0``).
            workers: threads decoding donors in parallel (default ``min(8, os.cpu_count())``).
            progress: show a tqdm progress bar.
            sources: keep only the rows whose ``source`` is in this list (default: all).

        Returns:
            the bank; ``bank.report`` (a :class:`BankReport`) lists skipped donors and boxes, which are also logged.

        Raises:
            ValueError: missing columns, unknown class names, ``canvas < 1`` or ``margin < 0``, a lung-box cell that
                is not a box (:func:`dadam.formats.lung_boxes_tensor`) or a donor whose rows give different lung
                boxes; or no patch was kept (an empty table, or every donor or box skipped), with the report's
                summary.
        """
        from dadam.io import read_image

        if canvas < 1:
            raise ValueError(f"canvas must be >= 1, got {canvas}")
        if not margin >= 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        need = ["image_id", "label", "x0", "y0", "x1", "y1"]
        missing = [c for c in need if c not in boxes.columns]
        if missing:
            raise ValueError(f"box table is missing columns {missing}; it has {list(boxes.columns)}")
        table = boxes.reset_index(drop=True)
        if "source" not in table.columns:
            table = table.assign(source="")
        if sources is not None:
            table = table[table["source"].isin(list(sources))]
        for lab in table["label"].unique():
            class_index(lab)  # raises ValueError naming an unknown class
        given_lungs = _donor_lung_boxes(table)  # (source, image_id) -> the table's lung box (4 floats)

        def root_of(source: str) -> pathlib.Path:
            if isinstance(image_root, Mapping):
                if source not in image_root:
                    raise ValueError(f"image_root has no folder for source {source!r}; it has {list(image_root)}")
                return pathlib.Path(image_root[source])
            return pathlib.Path(image_root)

        if isinstance(image_root, Mapping):
            unknown = sorted(set(map(str, table["source"].unique())) - set(image_root))
            if unknown:
                raise ValueError(f"image_root has no folder for sources {unknown}; it has {list(image_root)}")
        groups = list(table.groupby(["source", "image_id"], sort=True))
        report = BankReport()

        def cut(item):
            (source, image_id), rows = item
            source = str(source)
            path = root_of(source) / str(image_id)
            img = read_image(path, dtype=torch.uint8)  # (1, H, W)
            h_img, w_img = int(img.shape[-2]), int(img.shape[-1])
            from torchvision.transforms.v2 import functional as TF

            resized = TF.resize(img, [canvas, canvas], antialias=True)[0]  # (canvas, canvas)
            lung = given_lungs.get((source, str(image_id)))
            lung = lung_box(resized[None, None])[0].tolist() if lung is None else lung  # (4,) normalised xyxy
            out = []
            for row_id, r in rows.iterrows():
                w_ref = r["width"] if "width" in rows.columns and _finite(r["width"]) else w_img
                h_ref = r["height"] if "height" in rows.columns and _finite(r["height"]) else h_img
                x0, y0, x1, y1 = (float(r[k]) for k in ("x0", "y0", "x1", "y1"))
                if not all(map(math.isfinite, (x0, y0, x1, y1))) or x1 <= x0 or y1 <= y0:
                    out.append((row_id, f"invalid box {[x0, y0, x1, y1]}"))
                    continue
                mx, my = margin * (x1 - x0), margin * (y1 - y0)
                nx0, ny0 = max(0.0, (x0 - mx) / w_ref), max(0.0, (y0 - my) / h_ref)
                nx1, ny1 = min(1.0, (x1 + mx) / w_ref), min(1.0, (y1 + my) / h_ref)
                cx0, cy0 = max(0, math.floor(nx0 * canvas)), max(0, math.floor(ny0 * canvas))
                cx1, cy1 = min(canvas, math.ceil(nx1 * canvas)), min(canvas, math.ceil(ny1 * canvas))
                if cx1 <= cx0 or cy1 <= cy0:
                    out.append((row_id, f"box {[x0, y0, x1, y1]} is empty on the canvas after clipping"))
                    continue
                out.append(
                    (
                        resized[cy0:cy1, cx0:cx1].clone(),
                        (cx0, cy0, cx1, cy1),
                        (nx0, ny0, nx1, ny1),
                        class_index(r["label"]),
                        str(image_id),
                        source,
                        lung,
                    )
                )
            return str(path), out

        def safe_cut(item):
            (source, image_id), _ = item
            try:
                return cut(item)
            except Exception as e:  # a bad donor is reported (report + log), not fatal
                try:
                    donor = str(root_of(str(source)) / str(image_id))
                except ValueError:
                    donor = f"{source}:{image_id}"
                return donor, e

        workers = workers or min(8, os.cpu_count() or 1)
        from tqdm.auto import tqdm

        results = []
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for res in tqdm(pool.map(safe_cut, groups), total=len(groups), disable=not progress, desc="patch bank"):
                results.append(res)
        patches, pboxes, nboxes, pclasses, donors, srcs, lungs = [], [], [], [], [], [], []
        for donor_path, out in results:
            if isinstance(out, Exception):
                reason = f"{type(out).__name__}: {out}"
                report.skipped_donors.append((donor_path, reason))
                logger.warning("patch bank: skipped donor %s (%s)", donor_path, reason)
                continue
            report.donors_read += 1
            for entry in out:
                if len(entry) == 2:
                    report.skipped_boxes.append((donor_path, int(entry[0]), entry[1]))
                    logger.warning("patch bank: skipped box row %s of %s (%s)", entry[0], donor_path, entry[1])
                    continue
                p, b, nb, c, d, s, lung = entry
                patches.append(p)
                pboxes.append(b)
                nboxes.append(nb)
                pclasses.append(c)
                donors.append(d)
                srcs.append(s)
                lungs.append(lung)
        report.patches = len(patches)
        if not patches:
            raise ValueError(
                f"PatchBank.from_boxes kept no patch from {len(table)} box rows "
                f"(sources {sorted(map(str, table['source'].unique()))}): {report.summary()}"
            )
        return cls.from_patches(
            patches,
            torch.tensor(pboxes, dtype=torch.long).reshape(-1, 4),
            pclasses,
            canvas=canvas,
            norm_boxes=torch.tensor(nboxes, dtype=torch.float32).reshape(-1, 4),
            donors=donors,
            sources=srcs,
            report=report,
            lung_boxes=torch.tensor(lungs, dtype=torch.float32).reshape(-1, 4),
        )

    # ------------------------------------------------------------------ accessors
    def __len__(self) -> int:
        return int(self.classes.shape[0])

    def __repr__(self) -> str:
        return (
            f"PatchBank({len(self)} patches, {int((self.class_count > 0).sum())} classes, canvas={self.canvas}, "
            f"max_size={self.max_size}, {self.memory_bytes() / 2**20:.1f} MiB, device={self.device})"
        )

    @property
    def device(self) -> torch.device:
        return self.pixels.device

    @property
    def has_lung_boxes(self) -> bool:
        """Whether every patch's donor lung box is known (what ``placement="lung"`` needs)."""
        return bool(not torch.isnan(self.lung_boxes).any())

    @property
    def covered(self) -> torch.Tensor:
        """``(C,)`` bool: the classes the bank has at least one patch of."""
        return self.class_count > 0

    def tensors(self) -> dict[str, torch.Tensor]:
        """The patch tensors by name (``pixels, offsets, sizes, boxes, norm_boxes, classes``; the donors' lung boxes
        are :attr:`lung_boxes`)."""
        return {name: getattr(self, name) for name in _TENSORS}

    def patch(self, i: int) -> torch.Tensor:
        """Patch ``i`` as a ``(h, w)`` uint8 view of ``pixels`` (not for hot paths)."""
        h, w = (int(v) for v in self.sizes[i])
        o = int(self.offsets[i])
        return self.pixels[o : o + h * w].view(h, w)

    def class_counts(self) -> dict[str, int]:
        """Number of patches per class name (all C classes, zeros included)."""
        return dict(zip(self.class_names, (int(v) for v in self.class_count.cpu()), strict=True))

    def memory_bytes(self) -> int:
        """Bytes held by the bank's tensors."""
        tensors = (*self.tensors().values(), self.lung_boxes, self.class_start, self.class_count)
        return sum(t.numel() * t.element_size() for t in tensors)

    def to(self, device: torch.device | str) -> PatchBank:
        """A new bank with every tensor on ``device``."""
        return self._with_tensors({k: v.to(device) for k, v in self.tensors().items()}, self.lung_boxes.to(device))

    def with_lung_boxes(self, lung_boxes: torch.Tensor) -> PatchBank:
        """A new bank with these donor lung boxes (the patches shared, not copied): e.g. an older bank whose donors'
        lung boxes are known elsewhere.

        Args:
            lung_boxes: ``(N, 4)`` lung boxes of the patches' donors, in the bank's patch order, normalised xyxy
                (NaN rows: unknown).

        Raises:
            ValueError: a wrong shape, or a row that is neither all NaN nor a box in ``[0, 1]`` (naming it).

        Example:
            >>> bank = bank.with_lung_boxes(torch.tensor([[0.1, 0.1, 0.9, 0.8]]).repeat(len(bank), 1))  # doctest: +SKIP
        """
        lungs = torch.as_tensor(lung_boxes, dtype=torch.float32, device=self.device)
        if tuple(lungs.shape) != (len(self), 4):
            raise ValueError(f"lung_boxes must have shape ({len(self)}, 4), got {tuple(lungs.shape)}")
        _check_lungs(lungs)
        return self._with_tensors(self.tensors(), lungs)

    def _with_tensors(self, tensors: dict[str, torch.Tensor], lung_boxes: torch.Tensor) -> PatchBank:
        """A new bank of these patch tensors (:meth:`tensors`' names) and donor lung boxes, with this bank's canvas,
        donors, sources, class names and report."""
        return PatchBank(**tensors, lung_boxes=lung_boxes, **{name: getattr(self, name) for name in _DESCRIPTION})

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> None:
        """Write the bank to one safetensors file (atomically), with a format version and a SHA-256 of the tensors.

        A bank that knows a donor lung box is written as format version 2 (with a ``lung_boxes`` tensor), one that
        knows none as version 1, which earlier releases read too.

        Args:
            path: destination file (conventionally ``*.safetensors``).
        """
        from safetensors.torch import save

        tensors = {k: v.detach().cpu().contiguous() for k, v in self.tensors().items()}
        lungs = self.lung_boxes.detach().cpu().contiguous()
        if not bool(torch.isnan(lungs).all()):
            tensors["lung_boxes"] = lungs
        meta = {
            "format": FORMAT_NAME,
            "version": str(FORMAT_VERSION) if "lung_boxes" in tensors else "1",
            "canvas": str(self.canvas),
            "class_names": json.dumps(list(self.class_names)),
            "donors": json.dumps(self.donors),
            "sources": json.dumps(self.sources),
        }
        meta["sha256"] = _bank_digest(tensors, meta)
        path = pathlib.Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, save(tensors, metadata=meta))

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: torch.device | str = "cpu") -> PatchBank:
        """Read a bank written by :meth:`save`, verifying the format version and the SHA-256 of the tensors.

        Raises:
            ValueError: naming the file, if it is not a patch bank, has another format version, its tensors do not
                match the stored checksum (corrupt or tampered), or its contents are not a valid bank (metadata that
                does not parse, tensors of the wrong dtype or shape, boxes outside the canvas, NaN boxes, ...).
        """
        path = pathlib.Path(path)
        meta, tensors = read_safetensors(path, format_name=FORMAT_NAME, what="patch bank file", kind="a patch bank")
        if meta.get("version") not in _VERSIONS:
            raise ValueError(
                f"{path}: patch bank format version {meta.get('version')}, expected one of {', '.join(_VERSIONS)}"
            )
        names = _TENSORS if meta["version"] == "1" else (*_TENSORS, "lung_boxes")
        missing = [k for k in names if k not in tensors]
        if missing:
            raise ValueError(f"{path}: patch bank file lacks tensors {missing}")
        digest = _bank_digest(tensors, meta)
        if digest != meta.get("sha256"):
            raise ValueError(
                f"{path}: SHA-256 of the contents is {digest}, file says {meta.get('sha256')}: corrupt file"
            )
        dtypes = {
            k: torch.uint8 if k == "pixels" else torch.float32 if k in ("norm_boxes", "lung_boxes") else torch.long
            for k in names
        }
        wrong = [f"{k} is {tensors[k].dtype}, expected {d}" for k, d in dtypes.items() if tensors[k].dtype != d]
        if wrong:
            raise ValueError(f"{path}: patch bank tensors of the wrong dtype: {'; '.join(wrong)}")
        canvas, class_names, donors, sources = _read_meta(path, meta)
        try:
            bank = cls(
                **{k: tensors[k] for k in _TENSORS},
                canvas=canvas,
                donors=donors,
                sources=sources,
                class_names=class_names,
                lung_boxes=tensors.get("lung_boxes"),
            )
        except ValueError as e:
            raise ValueError(f"{path}: inconsistent patch bank: {e}") from None
        bad = _layout_errors(bank)
        if bad:  # a checksum proves the file is as written, not that its writer laid it out right
            raise ValueError(f"{path}: inconsistent patch bank layout: {'; '.join(bad)}")
        return bank if torch.device(device).type == "cpu" else bank.to(device)


def _read_meta(path: pathlib.Path, meta: Mapping[str, str]) -> tuple[int, list[str], list[str], list[str]]:
    """``canvas``, ``class_names``, ``donors`` and ``sources`` of a bank file's metadata, or a ValueError naming the
    file and the entry that does not parse."""

    def strings(key: str) -> list[str]:
        try:
            value = json.loads(meta[key])
        except (KeyError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: patch bank metadata {key!r} is missing or not JSON ({e})") from None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{path}: patch bank metadata {key!r} must be a JSON list of strings, got {value!r:.80}")
        return value

    text = meta.get("canvas", "")
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{path}: patch bank metadata 'canvas' must be a positive integer, got {text!r}")
    names = strings("class_names")
    if not names or len(set(names)) != len(names):
        raise ValueError(f"{path}: patch bank metadata 'class_names' must list distinct names, got {names!r:.80}")
    return int(text), names, strings("donors"), strings("sources")


def _layout_errors(bank: PatchBank) -> list[str]:
    """What is wrong with a bank's layout (empty list: nothing): the ops index ``pixels`` without bounds checks."""
    t = {k: v.cpu() for k, v in bank.tensors().items()}
    h, w = t["sizes"].unbind(1)  # (N,), (N,)
    box = t["boxes"]
    checks = {
        f"classes outside [0, {len(bank.class_names)})": (t["classes"] < 0) | (t["classes"] >= len(bank.class_names)),
        "empty patch sizes": (h < 1) | (w < 1),
        f"patches beyond the {t['pixels'].numel()} pixels": (t["offsets"] < 0)
        | (t["offsets"] + h * w > t["pixels"].numel()),
        "boxes that differ from the patch sizes": (box[:, 3] - box[:, 1] != h) | (box[:, 2] - box[:, 0] != w),
        f"boxes outside the {bank.canvas}x{bank.canvas} canvas": (box[:, :2] < 0).any(1)
        | (box[:, 2:] > bank.canvas).any(1),
        "norm_boxes that are NaN or outside [0, 1]": ~((t["norm_boxes"] >= 0) & (t["norm_boxes"] <= 1)).all(1),
        "lung_boxes that are neither NaN nor boxes in [0, 1]": lung_box_errors(bank.lung_boxes.cpu()),
    }
    return [f"{name} (patches {m.nonzero().flatten()[:5].tolist()})" for name, m in checks.items() if bool(m.any())]


def _check_lungs(lungs: torch.Tensor) -> None:
    """Raise ``ValueError`` naming the first row of ``(N, 4)`` donor lung boxes that is neither all NaN nor a box."""
    bad = lung_box_errors(lungs)  # (N,)
    if bool(bad.any()):
        i = int(bad.to(torch.uint8).argmax())
        row = ", ".join(f"{v:.6g}" for v in lungs[i].tolist())
        raise ValueError(
            f"lung_boxes row {i} is [{row}]: a donor's lung box is normalised xyxy in [0, 1] with x0 < x1 and "
            "y0 < y1, or all NaN when unknown"
        )


def _donor_lung_boxes(table) -> dict[tuple[str, str], list[float]]:
    """The lung box each donor's rows give in the table's :data:`~dadam.anatomy.LUNG_BOX_COLUMNS` (none: an empty
    dict; a donor whose rows leave them empty is left out), keyed by ``(source, image_id)``.

    Raises:
        ValueError: a cell that is not a box (:func:`dadam.formats.lung_boxes_tensor`), or one donor's rows that give
            different lung boxes (naming the donor and the boxes).
    """
    if not any(c in table.columns for c in LUNG_BOX_COLUMNS):
        return {}
    from dadam.formats.label_table import lung_boxes_tensor

    lungs = lung_boxes_tensor(table, what="box table")  # (rows, 4), NaN where empty
    out: dict[tuple[str, str], list[float]] = {}
    keys = zip(map(str, table["source"]), map(str, table["image_id"]), strict=True)
    for key, lung in zip(keys, lungs.tolist(), strict=True):
        if math.isnan(lung[0]):
            continue
        if key in out and out[key] != lung:
            raise ValueError(
                f"box table: the rows of donor {key[1]!r} (source {key[0]!r}) give different lung boxes {out[key]} "
                f"and {lung}; a donor has one lung box"
            )
        out[key] = lung
    return out


def _finite(v) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False
