"""A fault-injection engine: a TEST SEAM for tests and benchmarks about the farm itself.

It stands in for vLLM only where the engine is not the subject (scheduling at scale,
crash containment, store outages). A job selects it with an engine of
``kind: fault-injection``; each variant says what the engine does through its
``engine_args``:

    fault: pass | raise | segfault | abort | hang | oom     (default pass)
    build_s: seconds the "engine build" sleeps (default 0)

``pass`` generates deterministic text derived from the prompt (and a different text
with the adapter), so the real probes pass against it.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import signal
import time
from typing import Any

from farm.engine import Completion

FAULTS = ("pass", "raise", "segfault", "abort", "hang", "oom")


class InjectedFault(RuntimeError):
    """Raised by the fault-injection engine on ``fault: raise``."""


class FaultInjectionEngine:
    def __init__(self, engine_args: dict[str, Any], has_adapter: bool) -> None:
        self.fault = str(engine_args.get("fault", "pass"))
        if self.fault not in FAULTS:
            raise ValueError(f"fault-injection engine: unknown fault {self.fault!r}; use one of {', '.join(FAULTS)}")
        self.has_adapter = has_adapter
        started = time.perf_counter()
        time.sleep(float(engine_args.get("build_s", 0)))
        self._inject()
        self.build_seconds = time.perf_counter() - started

    def _inject(self) -> None:
        if self.fault == "raise":
            raise InjectedFault("injected failure during engine build")
        if self.fault == "segfault":
            ctypes.string_at(0)  # reads address 0: SIGSEGV in this process
        if self.fault == "abort":
            os.kill(os.getpid(), signal.SIGABRT)
        if self.fault == "hang":
            while True:
                time.sleep(3600)
        if self.fault == "oom":
            hoard = []
            while True:  # until the kernel's (or Ray's) OOM killer ends the process
                hoard.append(bytearray(256 * 2**20))

    def generate(
        self, prompts: list[str], max_tokens: int, *, lora: bool = False, logprobs: int | None = None
    ) -> list[Completion]:
        if lora and not self.has_adapter:
            raise ValueError("this cell has no LoRA adapter")
        salt = "adapter" if lora else "base"
        completions = []
        for prompt in prompts:
            digest = hashlib.sha256(f"{salt}:{prompt}".encode()).digest()
            token_ids = tuple(digest[i % len(digest)] for i in range(max_tokens))
            top = tuple({t: 0.0} for t in token_ids) if logprobs else None
            completions.append(Completion(" ".join(f"t{t}" for t in token_ids), token_ids, logprobs=top))
        return completions
