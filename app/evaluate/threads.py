"""Torch's intra-op threads for a long evaluation, by the share of the cores this process gets.

Why: torch starts one spinning intra-op thread per core. When other processes keep the cores busy (a shared
machine, several workers), every process running threads on every core at once slows all of them by more
than the share they lose: the default scorecard took 207 s on 2 idle cores but 1,018 s at a load average of
4–5 (issue 26). One thread per core *this process can expect to get* keeps its time close to its share.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator

__all__ = ["available_cores", "fair_threads", "torch_threads"]


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def fair_threads(cores: int | None = None, load: float | None = None) -> int:
    """Cores minus the cores other work keeps busy now (the 1-minute load average), at least 1.

    Idle 2 cores: 2 threads; a load of 1 or more on 2 cores: 1 thread (the other core is someone else's).
    """
    cores = available_cores() if cores is None else cores
    if load is None:
        try:
            load = os.getloadavg()[0]
        except OSError:
            load = 0.0
    return max(1, min(cores, cores - math.floor(load)))


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[int]:
    """Run the block with ``threads`` intra-op threads, then restore the previous setting."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(threads)))
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
