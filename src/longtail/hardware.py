"""What the machine offers: CPU capability, native bfloat16, the GPU."""

from __future__ import annotations

import os
import platform
import threading
import time
import warnings
from functools import cache

import torch

_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@cache
def cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def native_bf16() -> bool:
    """Whether the CPU computes bfloat16 natively (AVX-512 BF16 or AMX); elsewhere
    PyTorch emulates it, many times slower than float32."""
    return any(flag in cpu_flags() for flag in _BF16_FLAGS) or platform.machine() == "arm64"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    """The machine as benchmarks record it."""
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": native_bf16(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
    }


def warn_if_slow_precision(precision: str, accelerator: str) -> None:
    """Warn once when bfloat16 would run emulated on this CPU."""
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    if on_cpu and precision.startswith("bf16") and not native_bf16():
        warnings.warn(
            f"trainer.precision={precision} on a CPU without native bfloat16 "
            f"(capability {torch.backends.cpu.get_cpu_capability()}): it is emulated and runs "
            "many times slower than precision=32",
            stacklevel=2,
        )


def tree_memory(pid: int, field: str = "Pss_Anon") -> int:
    """A ``/proc/<pid>/smaps_rollup`` memory field summed over the process and its
    descendants, in bytes (Linux). ``Pss_Anon``: the anonymous resident memory, what the
    processes allocated themselves (not the file pages they map), a page shared by
    forked processes counted once in all; ``Rss``: all resident memory."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        try:
            with open(f"/proc/{current}/smaps_rollup") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith(f"{field}:")) * 1024
        except (OSError, StopIteration):  # ended meanwhile, or not ours to read
            pass
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as f:
                    pending += [int(child) for child in f.read().split()]
        except OSError:
            continue
    return total


class PeakMemory:
    """The peak of ``tree_memory(pid, field)`` while the ``with`` block runs, sampled every
    ``interval`` seconds by a thread: ``peak`` and ``start``, in bytes.

    The peak is the highest level held for two samples in a row: the tree is read one
    process after another, and a read that straddles a fork counts the pages the parent
    and the new child share twice, for an instant."""

    def __init__(self, pid: int | None = None, field: str = "Pss_Anon", interval: float = 0.02) -> None:
        self.pid, self.field, self.interval = pid or os.getpid(), field, interval
        self.start = self.peak = 0
        self._stop = threading.Event()

    def _sample(self) -> None:
        previous = self.start
        while not self._stop.is_set():
            current = tree_memory(self.pid, self.field)
            self.peak = max(self.peak, min(previous, current))
            previous = current
            time.sleep(self.interval)

    def __enter__(self) -> PeakMemory:
        self.start = self.peak = tree_memory(self.pid, self.field)
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
