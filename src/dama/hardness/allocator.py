"""glibc malloc settings for CPU inference: keep freed large blocks for reuse instead of returning them to the OS.

A CLIP forward on a CPU allocates activations of tens of MiB (a text batch of 128 × 22 tokens × 2048 MLP units is
23 MiB). glibc serves blocks above its mmap threshold (128 KiB, adapting up to 32 MiB) with a fresh `mmap` and
unmaps them on free, and trims the heap top above its trim threshold, so every forward pays page faults and page
zeroing on the same memory again. Raising both thresholds keeps that memory in the heap: measured on a 2-core
Xeon (AMX) VM with a ViT-B/32-size CLIP in float32, a 256-sentence text forward went from ~0.5 M page faults to
none and from 8.1 to 5.1 ms per sentence (docs/hardness.md#throughput). The cost is memory: freed activations stay
with the process (measured ~200 MiB more RSS over a 10k-pair run, still flat in the number of shards) and are not
given back to the OS until it exits, which is why only `dama hardness` (a process of its own) turns it on.
PyTorch's CPU tuning guide gives the same advice in the form "use jemalloc or tcmalloc".
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1  # mallopt parameter numbers, glibc <malloc.h>
M_MMAP_THRESHOLD = -3
THRESHOLD = 1 << 30  # 1 GiB: no activation of a dual encoder's batch reaches it

_applied: bool | None = None


def tune_glibc_malloc() -> bool:
    """Raise glibc's mmap and trim thresholds for this process; True when applied (or already applied).

    A no-op returning False off Linux, on a C library without `mallopt` (musl) or when glibc refuses the values.
    Settings apply to the whole process and cannot be undone except by setting them again.
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 — glibc only: musl has a mallopt that ignores everything
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _applied = mallopt(M_MMAP_THRESHOLD, THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, THRESHOLD) == 1
    return _applied
