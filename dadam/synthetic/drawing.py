"""Drawing primitives of the phantom radiographs: steps, noise, blur, resizing, shapes, boxes, image sizes.

Everything works on float32 "density" maps ``(H, W)``: larger = more attenuating = brighter on the radiograph.
Coordinates are pixels ``(x, y)`` with a top-left origin unless a name says ``u``/``v`` (fractions of the width and
height). All functions are vectorised over the pixels; the Python loops run over a handful of shapes, never pixels.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage

__all__ = [
    "DRAW_BYTES_PER_PIXEL",
    "MAX_SIZE",
    "MIN_SIZE",
    "blur",
    "box_from_mask",
    "capsule",
    "check_size",
    "disk",
    "grid",
    "polyline",
    "smooth_noise",
    "smoothstep",
    "to_uint8",
    "upsample",
]

#: Smallest image side the phantoms are drawn at: below it the anatomy has too few pixels to read.
MIN_SIZE = 64
#: Largest image side. While a chest is drawn its maps take up to about 120 bytes per pixel (about 2 GB at 4096 px,
#: 8 GB at 8192), in each worker process; 4096 keeps the default two workers well inside a 24 GB machine and is
#: still above the side of real radiographs (NIH 1024 px, MIMIC-CXR-JPG and VinDr-CXR about 2500-3500 px).
MAX_SIZE = 4096
#: Bytes per pixel a chest's drawing may hold at once (every class drawn).
DRAW_BYTES_PER_PIXEL = 120


def check_size(size: int, *, name: str = "size") -> int:
    """``size`` as an int when it is an integer in ``[MIN_SIZE, MAX_SIZE]``; else a ValueError naming ``name``."""
    if not isinstance(size, (int, np.integer)) or size < MIN_SIZE:
        raise ValueError(f"{name} must be an integer >= {MIN_SIZE}, got {size!r}")
    if size > MAX_SIZE:
        need = DRAW_BYTES_PER_PIXEL * int(size) ** 2 / 1e9
        raise ValueError(
            f"{name}={size} is above the limit of {MAX_SIZE} pixels: drawing one image of that side needs about "
            f"{need:.0f} GB per worker; choose {name} <= {MAX_SIZE}"
        )
    return int(size)


def grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates as fractions: ``u (1, W)`` in [0, 1) of the width, ``v (H, 1)`` of the height."""
    u = ((np.arange(w, dtype=np.float32) + 0.5) / w)[None, :]
    v = ((np.arange(h, dtype=np.float32) + 0.5) / h)[:, None]
    return u, v


def smoothstep(x: np.ndarray | float, e0: float, e1: float) -> np.ndarray:
    """Hermite step from 0 at ``e0`` to 1 at ``e1`` (``e1 < e0`` gives the mirrored step); float32, in place."""
    t = np.asarray(x, dtype=np.float32) - np.float32(e0)
    t *= np.float32(1.0 / (e1 - e0))
    np.clip(t, 0.0, 1.0, out=t)
    out = t * np.float32(-2.0)
    out += np.float32(3.0)
    out *= t
    out *= t
    return out


def upsample(a: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear resize of a float map ``(h0, w0)`` to ``(h, w)``, pixel centres aligned (a new, writable float32 array).

    The common 2x case is done with numpy (the same weights as PIL's bilinear filter: 3/4 and 1/4 of the two
    nearest source pixels, edges replicated); other sizes go through PIL.
    """
    a = np.asarray(a, dtype=np.float32)
    if a.shape == (h, w):
        return a.copy()
    if (2 * a.shape[0], 2 * a.shape[1]) != (h, w):
        return np.array(Image.fromarray(a, mode="F").resize((w, h), Image.BILINEAR), dtype=np.float32)  # writable
    q = np.float32(0.25)
    rows = np.empty((h, a.shape[1]), np.float32)
    up = np.concatenate([a[:1], a[:-1]], axis=0)
    dn = np.concatenate([a[1:], a[-1:]], axis=0)
    rows[0::2] = a + q * (up - a)
    rows[1::2] = a + q * (dn - a)
    out = np.empty((h, w), np.float32)
    lf = np.concatenate([rows[:, :1], rows[:, :-1]], axis=1)
    rt = np.concatenate([rows[:, 1:], rows[:, -1:]], axis=1)
    out[:, 0::2] = rows + q * (lf - rows)
    out[:, 1::2] = rows + q * (rt - rows)
    return out


def smooth_noise(h: int, w: int, cell: float, rng: np.random.Generator) -> np.ndarray:
    """Band-limited noise ``(H, W)`` float32, about zero mean, unit std, features about ``cell`` pixels wide.

    A coarse normal grid resized with a bicubic kernel (PIL on float images): cheap and smooth.
    """
    gh, gw = max(2, int(np.ceil(h / cell)) + 2), max(2, int(np.ceil(w / cell)) + 2)
    coarse = rng.standard_normal((gh, gw)).astype(np.float32)
    big = Image.fromarray(coarse, mode="F").resize((int(gw * cell), int(gh * cell)), Image.BICUBIC)
    arr = np.asarray(big, dtype=np.float32)
    oy, ox = int(cell), int(cell)
    out = arr[oy : oy + h, ox : ox + w]
    return out / max(float(out.std()), 1e-6)


def blur(a: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur (``scipy.ndimage.gaussian_filter``), float32 out."""
    if sigma <= 0:
        return a.astype(np.float32, copy=False)
    return ndimage.gaussian_filter(a.astype(np.float32, copy=False), sigma, mode="nearest", truncate=3.0)


def disk(
    h: int, w: int, cx: float, cy: float, rx: float, ry: float, *, soft: float = 1.0, angle: float = 0.0
) -> np.ndarray:
    """Soft-edged filled ellipse ``(H, W)`` in [0, 1] centred at pixel ``(cx, cy)`` with radii ``rx, ry`` pixels.

    Computed only in its bounding window (everything outside is exactly 0).
    """
    out = np.zeros((h, w), np.float32)
    edge = soft / max(min(rx, ry), 1e-3)
    ext = max(rx, ry) * (1.0 + 0.5 * edge) + 2.0  # the soft rim reaches r = 1 + edge / 2
    win = _window(h, w, cx - ext, cy - ext, cx + ext, cy + ext)
    if win is None:
        return out
    ys, xs = win
    x = np.arange(xs.start, xs.stop, dtype=np.float32)[None, :] + 0.5 - cx
    y = np.arange(ys.start, ys.stop, dtype=np.float32)[:, None] + 0.5 - cy
    if angle:
        c, s = np.cos(angle), np.sin(angle)
        x, y = c * x + s * y, -s * x + c * y
    r = np.sqrt((x / rx) ** 2 + (y / ry) ** 2)
    out[ys, xs] = np.clip((1.0 - r) / edge + 0.5, 0.0, 1.0)
    return out


def _window(h: int, w: int, x0: float, y0: float, x1: float, y1: float) -> tuple[slice, slice] | None:
    xa, ya = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
    xb, yb = min(w, int(np.ceil(x1)) + 1), min(h, int(np.ceil(y1)) + 1)
    if xa >= xb or ya >= yb:
        return None
    return slice(ya, yb), slice(xa, xb)


def capsule(
    h: int,
    w: int,
    p0: tuple[float, float],
    p1: tuple[float, float],
    r0: float,
    r1: float | None = None,
    *,
    flare: float = 0.0,
    cortex: float = 0.0,
) -> np.ndarray:
    """A long bone / tube from ``p0`` to ``p1`` (pixels) of radius ``r0`` -> ``r1``; ``(H, W)`` density in [0, ~1].

    ``flare`` widens both ends (epiphyses) by that fraction; ``cortex`` > 0 makes the rim brighter than the middle
    like cortical bone over a medullary canal (the projected thickness of a tube). Computed only in its window.
    """
    r1 = r0 if r1 is None else r1
    out = np.zeros((h, w), np.float32)
    rmax = max(r0, r1) * (1.0 + flare) + 2.0
    win = _window(
        h, w, min(p0[0], p1[0]) - rmax, min(p0[1], p1[1]) - rmax, max(p0[0], p1[0]) + rmax, max(p0[1], p1[1]) + rmax
    )
    if win is None:
        return out
    ys, xs = win
    x = np.arange(xs.start, xs.stop, dtype=np.float32)[None, :] + 0.5
    y = np.arange(ys.start, ys.stop, dtype=np.float32)[:, None] + 0.5
    dx, dy = p1[0] - p0[0], p1[1] - p0[1]
    length2 = max(dx * dx + dy * dy, 1e-6)
    t = np.clip(((x - p0[0]) * dx + (y - p0[1]) * dy) / length2, 0.0, 1.0)
    d = np.hypot(x - (p0[0] + t * dx), y - (p0[1] + t * dy))
    r = r0 + (r1 - r0) * t
    if flare:
        r = r * (1.0 + flare * (np.exp(-((t / 0.12) ** 2)) + np.exp(-(((1 - t) / 0.12) ** 2))))
    q = np.clip(d / r, 0.0, 1.0)
    inside = np.clip((r - d) / 1.0 + 0.5, 0.0, 1.0)
    # projected chord length of a cylinder ~ sqrt(1 - q^2); a hollow tube adds a rim peak
    body = np.sqrt(np.clip(1.0 - q * q, 0.0, 1.0))
    if cortex:
        inner = np.sqrt(np.clip(1.0 - (q / 0.62) ** 2, 0.0, 1.0)) * 0.62
        body = (body - cortex * inner) / (1.0 - cortex * 0.62)
    out[ys, xs] = np.maximum(body, 0.0) * inside
    return out


def polyline(h: int, w: int, xs: np.ndarray, ys: np.ndarray, width: float) -> np.ndarray:
    """A smooth curve through points ``(xs, ys)`` (pixels), ``width`` pixels wide; ``(H, W)`` float32 in [0, 1]."""
    xs = np.asarray(xs, dtype=np.float64)
    ys = np.asarray(ys, dtype=np.float64)
    seg = np.hypot(np.diff(xs), np.diff(ys))
    s = np.concatenate([[0.0], np.cumsum(seg)])
    n = max(2, int(s[-1] * 2) + 2)
    t = np.linspace(0.0, s[-1], n)
    px, py = np.interp(t, s, xs), np.interp(t, s, ys)
    out = np.zeros((h, w), np.float32)
    pad = width * 2 + 4
    win = _window(h, w, px.min() - pad, py.min() - pad, px.max() + pad, py.max() + pad)
    if win is None:
        return out
    sy, sx = win
    sub = np.zeros((sy.stop - sy.start, sx.stop - sx.start), np.float32)
    ix = np.floor(px).astype(np.int64) - sx.start
    iy = np.floor(py).astype(np.int64) - sy.start
    ok = (ix >= 0) & (iy >= 0) & (ix < sub.shape[1]) & (iy < sub.shape[0])
    sub[iy[ok], ix[ok]] = 1.0
    if width > 1.5:
        sub = ndimage.maximum_filter(sub, size=int(round(width)))
    sub = blur(sub, 0.6)
    out[sy, sx] = np.clip(sub * 1.4, 0.0, 1.0)
    return out


def box_from_mask(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Tight ``(x0, y0, x1, y1)`` half-open pixel box of the true pixels of ``mask``, or None when it is empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Clip a float image in [0, 1] and round it to uint8."""
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
