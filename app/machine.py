"""What machine this is: the CPU's model name, identity and flags, read once from ``/proc/cpuinfo``.

Benches print it, fast mode keys its measured plans on it, and the unseen-syndrome experiment records it: the
CPU changes between machines of one kind (an AMD EPYC without AMX, an Intel Xeon with it: bf16 costs 2x or
8x less than float32), and a number without its machine cannot be compared. Base layer: imports nothing of
the app.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")


@functools.lru_cache(maxsize=1)
def cpuinfo() -> dict[str, str]:
    """The first processor's fields of ``/proc/cpuinfo`` (every core of a machine reports the same), or {}."""
    fields: dict[str, str] = {}
    try:
        text = CPUINFO.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return fields
    for line in text.splitlines():
        if not line.strip():
            break  # the first processor is enough
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def cpu_name() -> str:
    """The CPU's model name ("AMD EPYC", "Intel(R) Xeon(R) Platinum 8480+"), or what the platform says."""
    return cpuinfo().get("model name") or platform.processor() or platform.machine() or "unknown CPU"


def cpu_id() -> str:
    """Vendor, family, model and stepping: a virtual machine's model name can be generic ("AMD EPYC")."""
    fields = cpuinfo()
    if not fields:
        return platform.machine()
    return (f"{fields.get('vendor_id', '?')} family {fields.get('cpu family', '?')} model {fields.get('model', '?')} "
            f"stepping {fields.get('stepping', '?')}")


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (avx2, avx512_bf16, amx_bf16 …); empty where /proc/cpuinfo is not readable."""
    return frozenset(cpuinfo().get("flags", "").split())
