"""The platform a result was measured on, named from the cell's measured env facts (never from the job).

A platform is what changes vLLM's choices for the same checkpoint and request: a GPU's model and compute
capability (vLLM picks FlashAttention 3, Marlin or FP8 kernels by capability), or a CPU's architecture and
the instruction set that selects vLLM's CPU kernels (AMX, AVX-512 with BF16, AVX-512, AVX2). Core counts,
hostnames and driver builds are facts of the result, not of the platform.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from farm.model.results import EnvFacts

# The CPU feature that names the tier (/proc/cpuinfo flags, farm.cell.execute.CPU_FEATURES), best first.
CPU_TIERS = (("amx_bf16", "AMX"), ("avx512_bf16", "AVX-512 BF16"), ("avx512f", "AVX-512"), ("avx2", "AVX2"))
UNKNOWN = "unknown platform"


def platform_of(env: EnvFacts) -> str | None:
    """E.g. ``NVIDIA H200 · sm_90``, ``x86_64 CPU · AMX``; None when the result measured nothing of its machine."""
    device = env.device or ""
    if device and not device.startswith("cpu"):
        capability = (env.compute_capability or "").replace(".", "")
        return f"{device} · sm_{capability}" if capability else device
    if not (env.platform or env.cpu or device):
        return None
    arch = (env.platform or "").rpartition("-")[2] or "unknown"
    tier = next((name for flag, name in CPU_TIERS if flag in env.cpu_features), None)
    return f"{arch} CPU" + (f" · {tier}" if tier else "")


def most_common(platforms: Iterable[str | None]) -> str | None:
    """The platform most results of a run measured (ties: the first seen); None when none measured one."""
    counted = Counter(p for p in platforms if p)
    return counted.most_common(1)[0][0] if counted else None
