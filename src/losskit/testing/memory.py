"""Peak resident memory of this process, measured so that a parent's memory does not leak into it.

``resource.getrusage(RUSAGE_SELF).ru_maxrss`` is the wrong tool in a subprocess: Linux carries the
parent's peak across ``fork`` + ``exec`` into the child's ``ru_maxrss``, so a child started from a large
process (a pytest run after thousands of tests) reports the parent's peak, and "peak - baseline" reads
the same for any workload (it reads 0 or a constant). The high-water mark of the process's own address
space (``VmHWM`` in ``/proc/self/status``) starts fresh at ``exec``, and writing ``5`` to
``/proc/self/clear_refs`` resets it to the current resident size, so the peak of one piece of work is

    with PeakRSS() as m:
        work()
    m.increase   # bytes above the resident size at entry

Outside Linux the fallback is ``ru_maxrss`` (with the caveat above); :data:`EXACT` says which is in use.
"""

from __future__ import annotations

import os
import resource
import sys

__all__ = ["EXACT", "PeakRSS", "current_rss", "peak_rss", "reset_peak_rss"]

_STATUS = "/proc/self/status"
EXACT = sys.platform.startswith("linux") and os.path.exists(_STATUS)


def _status_kib(field: str) -> int | None:
    try:
        with open(_STATUS) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def current_rss() -> int:
    """Resident size of this process now, in bytes."""
    kib = _status_kib("VmRSS")
    if kib is not None:
        return kib * 1024
    return peak_rss()


def peak_rss() -> int:
    """Highest resident size of this process's own address space, in bytes (``VmHWM``; ``ru_maxrss``
    where ``/proc`` is missing)."""
    kib = _status_kib("VmHWM")
    if kib is not None:
        return kib * 1024
    scale = 1 if sys.platform == "darwin" else 1024    # macOS reports bytes, Linux KiB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def reset_peak_rss() -> bool:
    """Reset the high-water mark to the current resident size; ``False`` where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class PeakRSS:
    """Context manager: ``increase`` is the peak resident size inside the block minus the size at entry."""

    def __enter__(self) -> PeakRSS:
        self.reset = reset_peak_rss()
        self.before = current_rss()
        self.baseline_peak = peak_rss()
        self.increase = 0
        return self

    def __exit__(self, *exc) -> None:
        base = self.before if self.reset else self.baseline_peak
        self.increase = max(0, peak_rss() - base)
