"""keep_freed_memory: glibc keeps the memory a call freed for the next one, only where the environment lets it."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from fewshot_sdk import allocator

PROBE = """
import ctypes, sys, torch
import fewshot_sdk as fs
kept = fs.keep_freed_memory() if sys.argv[1] == "keep" else False
libc = ctypes.CDLL("libc.so.6")
wide = hasattr(libc, "mallinfo2")  # glibc >= 2.33; mallinfo's int fields serve below 2 GiB
FIELDS = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")
class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t if wide else ctypes.c_int) for name in FIELDS]
info = libc.mallinfo2 if wide else libc.mallinfo
info.restype = Info
before = info().hblkhd
block = torch.ones(6 << 20)  # 24 MiB: above glibc's default mmap threshold for a first large block
print(kept, (info().hblkhd - before) >> 20)
"""


def mmapped_mib(mode: str) -> tuple[str, int]:
    """In a fresh process: whether the settings took effect, and the MiB a 24 MiB tensor added to mmapped memory."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != allocator.OPT_OUT}
    result = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=120, check=True, env=environment
    )
    kept, mib = result.stdout.split()
    return kept, int(mib)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_large_blocks_come_from_the_heap_that_keeps_them_not_from_fresh_mappings():
    # By default glibc maps a first large block afresh, and unmaps it on free: every call's activations are then new
    # pages. Kept, blocks up to 32 MiB come from the heap, whose freed top stays in the process (up to 1 GiB).
    assert mmapped_mib("default") == ("False", 24)
    assert mmapped_mib("keep") == ("True", 0)


@pytest.mark.parametrize(
    "environment",
    [{allocator.OPT_OUT: "0"}, {"MALLOC_ARENA_MAX": "2"}, {"GLIBC_TUNABLES": "glibc.malloc.tcache_count=0"}],
)
def test_an_allocator_the_environment_chose_is_left_alone(monkeypatch, environment):
    monkeypatch.setattr(allocator, "_kept", False)
    for name in [k for k in os.environ if k.startswith("MALLOC_")]:
        monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert allocator.keep_freed_memory() is False
    assert not any(k.startswith("MALLOC_") and k not in environment for k in os.environ)


def test_a_preloaded_allocator_is_left_alone(monkeypatch):
    monkeypatch.setattr(allocator, "_kept", False)
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")
    assert allocator.keep_freed_memory() is False
