"""Timing: seconds per call (CUDA events or ``perf_counter``), interleaved rounds, images/s and page faults."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable

import torch

__all__ = ["epoch_seconds", "host_sync_check", "images_per_s", "page_faults", "sync", "time_call", "time_interleaved"]


def sync(device: torch.device | str) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(
    fn: Callable[[], object],
    *,
    device: torch.device | str,
    warmup: int = 1,
    repeats: int = 5,
    inner: int = 1,
    budget_s: float = float("inf"),
) -> list[float]:
    """Seconds per call of ``fn`` for each timed run, after ``warmup`` untimed calls.

    On CUDA a run is ``inner`` back-to-back calls between two CUDA events (the launch queue stays full); on the CPU
    one call timed with ``time.perf_counter``. Repeating stops once the timed runs took ``budget_s`` (at least 2 runs).

    Args:
        fn: the call to time (its result is discarded).
        device: where ``fn`` runs.
        warmup: untimed calls first.
        repeats: most timed runs.
        inner: calls per timed run.
        budget_s: stop repeating after this much measured time.

    Returns:
        seconds per call, one value per timed run.

    Example:
        >>> times = time_call(lambda: torch.zeros(10).sum(), device="cpu", repeats=3)
        >>> len(times), all(t > 0 for t in times)
        (3, True)
    """
    device = torch.device(device)
    if repeats < 1 or inner < 1 or warmup < 0:
        raise ValueError(f"repeats and inner must be >= 1 and warmup >= 0, got {repeats}, {inner}, {warmup}")
    for _ in range(warmup):
        fn()
    sync(device)
    times: list[float] = []
    spent = 0.0
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(inner):
                fn()
            end.record()
            end.synchronize()
            t = start.elapsed_time(end) / 1000.0 / inner
        else:
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            t = (time.perf_counter() - t0) / inner
        times.append(max(t, 1e-12))
        spent += t * inner
        if spent >= budget_s and len(times) >= 2:
            break
    return times


def time_interleaved(
    fns: dict[str, Callable[[], object]],
    *,
    device: torch.device | str,
    warmup: int = 1,
    repeats: int = 5,
    inner: int = 1,
    budget_s: float = float("inf"),
) -> dict[str, list[float]]:
    """Like :func:`time_call` for several calls, one timed run of each per round, so load drift hits all alike.

    Repeating stops once the rounds took ``len(fns) * budget_s`` (at least 2 rounds).

    Returns:
        name -> seconds per call of each timed run.

    Example:
        >>> t = time_interleaved({"a": lambda: None, "b": lambda: None}, device="cpu", repeats=3)
        >>> sorted(t), len(t["a"])
        (['a', 'b'], 3)
    """
    for fn in fns.values():
        time_call(fn, device=device, warmup=warmup, repeats=1, inner=inner)  # warm-up plus one run each
    out: dict[str, list[float]] = {name: [] for name in fns}
    spent = 0.0
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time_call(fn, device=device, warmup=0, repeats=1, inner=inner)[0]
            out[name].append(t)
            spent += t * inner
        if spent >= len(fns) * budget_s and len(out[next(iter(fns))]) >= 2:
            break
    return out


def images_per_s(batch: int, times: list[float]) -> float:
    """``batch`` images over the median of ``times`` (seconds per call)."""
    return batch / statistics.median(times)


def page_faults(fn: Callable[[], object], *, device: torch.device | str) -> int | None:
    """Minor page faults of this process (every thread) during one call of ``fn``, after one untimed call.

    A page fault is the kernel mapping and zero-filling a page on its first touch: an output written into fresh
    memory pays one per 4 KiB page, one written into memory reused from an earlier call pays none. None on CUDA
    (device memory does not fault) and where ``resource`` is missing (Windows).

    Example:
        >>> page_faults(lambda: torch.ones(2**24), device="cpu") > 1000  # 64 MB of fresh pages: 16384 faults
        True
    """
    if torch.device(device).type != "cpu":
        return None
    try:
        import resource
    except ImportError:
        return None
    fn()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    fn()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def host_sync_check(fn: Callable[[], object]) -> bool | str:
    """Run ``fn`` once on CUDA under ``torch.cuda.set_sync_debug_mode("error")``: True, or the text of a host sync."""
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        fn()
        ok: bool | str = True
    except RuntimeError as e:
        ok = f"host sync: {e}"[:300]
    finally:
        torch.cuda.set_sync_debug_mode(0)
    torch.cuda.synchronize()
    return ok


def epoch_seconds(batches: Iterable, device: torch.device | str) -> tuple[float, int]:
    """Wall seconds and images of one pass over a loader of ``(images, labels, ids)`` batches moved to ``device``."""
    t0 = time.perf_counter()
    n = 0
    for images, _labels, _ids in batches:
        images = images.to(device, non_blocking=True)
        n += images.shape[0]
    sync(device)
    return time.perf_counter() - t0, n
