"""glibc malloc settings for a process that runs torch on the CPU: keep freed memory for the next call.

torch's CPU tensors come from malloc. glibc serves a large block (above its mmap threshold, which
adapts up to 32 MiB) with fresh pages from the kernel and returns it on free, and it trims the top
of its heap back to the kernel past a threshold too; the next call then takes the same memory again
and the kernel zero-fills every page on first touch. Meta-iterations on Omniglot took tens of
thousands of fresh pages that way, none with these settings, and ran faster
(``benchmarks/results/allocator_cpu.md``). The memory kept is what the next call needs anyway, so
the process's peak does not grow; it stops shrinking between calls.

The ``fewshot`` command and ``python -m fewshot_sdk.train`` set this up for their own processes.
A script of yours can call :func:`keep_freed_memory` itself (``fs.keep_freed_memory()``): the
library never changes the allocator of a process it is imported into.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

#: glibc's ``mallopt`` parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
#: Blocks up to this size come from the heap (glibc's largest allowed mmap threshold on 64-bit).
MMAP_THRESHOLD = 32 << 20
#: Free memory at the top of the heap kept up to this size instead of being trimmed.
TRIM_THRESHOLD = 1 << 30
#: The environment variables glibc reads at start-up for the same settings (for child processes).
ENVIRONMENT = {"MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD), "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD)}
#: Set to 0 to leave the allocator as it is.
OPT_OUT = "FEWSHOT_KEEP_FREED_MEMORY"


def keep_freed_memory() -> bool:
    """Make this process's malloc keep freed memory (and its child processes', through the environment).

    Returns whether the settings took effect: not on another C library than glibc, not where the
    environment already chooses (``MALLOC_*`` or ``GLIBC_TUNABLES`` set, an allocator in
    ``LD_PRELOAD``, or ``FEWSHOT_KEEP_FREED_MEMORY=0``).
    """
    global _kept
    if _kept:
        return True
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc" or not _environment_allows():
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    if not (libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)):
        return False
    for name, value in ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    _kept = True
    return True


_kept = False


def _environment_allows() -> bool:
    if os.environ.get(OPT_OUT, "1") == "0":
        return False
    if any(name.startswith("MALLOC_") for name in os.environ) or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    return not any(name in os.environ.get("LD_PRELOAD", "") for name in ("jemalloc", "tcmalloc", "mimalloc"))
