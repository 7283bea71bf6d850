"""What a bundle holds: pip resolves ``vllm==VERSION`` and the farm's needs for the target Python and
platform; the target's own packages and the packages vLLM does not import on the farm's paths are
left out, each with its reason.

Resolution is pip's own resolver, run as ``pip install --dry-run --report --ignore-installed
--target … --python-version … --platform … --only-binary=:all:``: it reads wheel metadata only
(PEP 658), so torch and the CUDA libraries the target already has are never downloaded, and
the report gives every package with its requirements, from which the bundle's contents are a
walk. (``pip download`` would fetch every wheel of the resolution, gigabytes of CUDA
libraries, before anything could be left out.) pip evaluates environment markers
(``python_version > "3.11"``) with the Python it runs on, not ``--python-version``, so
resolution runs with an interpreter of the target's minor version when one is found.

The walk starts at the roots (vLLM, Ray pinned to the cluster's, the farm's cell
requirements, extras) and follows each package's requirements with the target's markers.
It does not descend into what the target has at a compatible version (its own dependencies
came with it) nor into ``LEFT_OUT``. A target package is compatible when its version satisfies
every requirement on it in the walk; when a freeze is given, a second resolution pins those
packages to the target's versions, so what the bundle ships was chosen to work with them.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# packaging comes with Ray, a dependency of the farm; pip (which resolves) vendors its own copy.
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from farm.errors import BundleError


@dataclass(frozen=True)
class LeftOut:
    """A requirement of vLLM the farm's cells do not import (see ``farm.bundles.imports``)."""

    imports: tuple[str, ...]  # the modules it provides (and their submodules), for the import check
    reason: str
    env: tuple[tuple[str, str], ...] = ()  # what a cell sets so vLLM does not reach for it


_SERVE = "the OpenAI-compatible HTTP server and CLI of `vllm serve` (fastapi[standard] extras); the offline LLM never imports it"
_KERNELS = ("an optional kernel library: vLLM checks for it (vllm/utils/import_utils.py, has_*) and falls back; on Hopper "
            "the farm's cells use FA3 (vllm_flash_attn), Triton/Marlin MoE and LoRA kernels from vLLM's own wheel")
_STRUCTURED = "a structured-output (guided decoding) backend, imported lazily only for requests with a grammar; probes send none"
_TOOLCHAIN = ("the CUDA compiler and headers (nvcc, NVVM, CRT, CCCL; 116 MB in vLLM 0.22.1's bundle) that humming-kernels' "
              "[cu13]/[cu12] extra brings for its JIT: humming compiles a kernel only when vLLM selects one "
              "(--quantization humming, --moe-backend humming, MXFP4 MoE), never for the farm's quantizations; cells set "
              "HUMMING_DISABLE_PARALLEL_BUILD=1, so importing humming does not start its two background builds "
              "(humming/ops/utils.py, humming/utils/nvrtc.py), which need them")
_VIDEO = "video/audio decoding of multimodal inputs; the import is guarded (vllm/multimodal/video.py) and the zoo is text-only"

# Checked against vLLM 0.26.0's source with farm.bundles.imports (no unguarded import-time use on
# the farm's entry modules); `farm bundle` repeats that check on every version it bundles.
LEFT_OUT: dict[str, LeftOut] = {
    **{name: LeftOut((mod,), _SERVE) for name, mod in (
        ("uvicorn", "uvicorn"), ("fastapi-cli", "fastapi_cli"), ("fastapi-cloud-cli", "fastapi_cloud_cli"),
        ("httptools", "httptools"), ("websockets", "websockets"), ("watchfiles", "watchfiles"),
        ("python-dotenv", "dotenv"), ("email-validator", "email_validator"), ("python-multipart", "multipart"),
        ("rich-toolkit", "rich_toolkit"), ("sentry-sdk", "sentry_sdk"), ("rignore", "rignore"), ("fastar", "fastar"),
        ("prometheus-fastapi-instrumentator", "prometheus_fastapi_instrumentator"), ("sse-starlette", "sse_starlette"),
    )},
    "anthropic": LeftOut(("anthropic",), "the Anthropic Messages API endpoint of `vllm serve`"),
    "mcp": LeftOut(("mcp",), "MCP tool servers of the Responses API (`vllm serve`); imported lazily in vllm/entrypoints/mcp"),
    "model-hosting-container-standards": LeftOut(("model_hosting_container_standards",),
                                                 "SageMaker routes of `vllm serve` (vllm/entrypoints/serve/sagemaker)"),
    # One namespace package: each distribution is told apart by the modules it adds (the API is the namespace's
    # own: fastapi >= 0.165 imports opentelemetry.context at import time, so a bundle whose fastapi does keeps it).
    **{name: LeftOut(modules, "OpenTelemetry tracing, off unless --otlp-traces-endpoint; the import is "
                     "guarded (vllm/tracing/otel.py)") for name, modules in (
        ("opentelemetry-api", ("opentelemetry",)), ("opentelemetry-sdk", ("opentelemetry.sdk",)),
        ("opentelemetry-exporter-otlp", ("opentelemetry.exporter.otlp",)),
        ("opentelemetry-semantic-conventions-ai", ("opentelemetry.semconv_ai",)))},
    "pynvvideocodec": LeftOut(("PyNvVideoCodec",), _VIDEO),
    "torchcodec": LeftOut(("torchcodec",), _VIDEO),
    "opencv-python-headless": LeftOut(("cv2",), _VIDEO),
    "mistral-common": LeftOut(("mistral_common",), "Mistral's tokenizer mode and Pixtral/Voxtral models only; imported lazily"),
    # Not xgrammar or llguidance: vllm.v1.request loads both through LazyLoader'd dataclass-field
    # annotations (farm.bundles.imports._lazy_loads_at_import), as a GPU run showed; nor
    # apache-tvm-ffi, which xgrammar imports first thing (xgrammar/exception.py).
    "outlines-core": LeftOut(("outlines_core",), _STRUCTURED),
    "lm-format-enforcer": LeftOut(("lmformatenforcer",), _STRUCTURED),
    "flashinfer-python": LeftOut(
        ("flashinfer",), "FlashInfer kernels: on Hopper attention is FA3 and MoE/LoRA use Triton; its top-k/top-p sampler "
        "is on by default in vLLM >= 0.2x and imports flashinfer unguarded (vllm/v1/sample/ops/topk_topp_sampler.py), "
        "so cells set VLLM_USE_FLASHINFER_SAMPLER=0 (vLLM's PyTorch sampler; greedy probes do not sample)",
        env=(("VLLM_USE_FLASHINFER_SAMPLER", "0"),)),
    "flashinfer-cubin": LeftOut(
        ("flashinfer_cubin",), "FlashInfer's prebuilt kernels (cubins, 344-426 MB in vLLM 0.22-0.24), loaded only by "
        "flashinfer-python, which is left out; vLLM only asks whether it is installed (vllm/utils/flashinfer.py, "
        "has_flashinfer_cubin)"),
    **{name: LeftOut((mod,), _KERNELS) for name, mod in (
        ("tilelang", "tilelang"), ("nvidia-cutlass-dsl", "cutlass"),
        ("quack-kernels", "quack"), ("tokenspeed-mla", "tokenspeed_mla"), ("humming-kernels", "humming"),
        ("nvidia-cudnn-frontend", "cudnn"), ("fastsafetensors", "fastsafetensors"),
    )},
    "numba": LeftOut(("numba",), "n-gram speculative decoding only (vllm/v1/spec_decode/ngram_proposer.py); "
                     "vLLM pins a numba the target's may not match, and numba brings llvmlite (~40 MiB)"),
    # Data, not modules (nvidia/cu13/bin, nvvm, include): nothing imports them, so the import check never keeps them.
    **{name: LeftOut((), _TOOLCHAIN, env=(("HUMMING_DISABLE_PARALLEL_BUILD", "1"),)) for name in (
        "nvidia-cuda-nvcc", "nvidia-nvvm", "nvidia-cuda-crt", "nvidia-cuda-cccl",
        "nvidia-cuda-nvcc-cu12", "nvidia-cuda-cccl-cu12",
    )},
}


@dataclass(frozen=True)
class Target:
    """Where the bundle runs: a CPython version and a manylinux platform."""

    python: str  # "3.12"
    platform: str  # "manylinux_2_28_x86_64"

    def __post_init__(self) -> None:
        if not re.fullmatch(r"3\.\d+", self.python):
            raise BundleError(f"--python {self.python!r}: give major.minor, e.g. 3.12")
        if not re.fullmatch(r"manylinux_2_\d+_(x86_64|aarch64)", self.platform):
            raise BundleError(f"--platform {self.platform!r}: give a manylinux_2_NN_ARCH tag, e.g. manylinux_2_28_x86_64 "
                              "(NN: the node's glibc minor version or lower; `ldd --version` on the node says it)")

    @property
    def glibc(self) -> str:
        return "2." + self.platform.split("_")[2]

    @property
    def arch(self) -> str:
        return self.platform.split("_", 3)[3]

    def platform_tags(self) -> list[str]:
        """The tag and every older one a node with this glibc also runs (pip does not expand them itself)."""
        minor = int(self.platform.split("_")[2])
        tags = [f"manylinux_2_{m}_{self.arch}" for m in range(minor, 4, -1)]
        legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
        return tags + [f"{name}_{self.arch}" for m, name in legacy.items() if m <= minor]

    def pip_options(self) -> list[str]:
        options = ["--only-binary=:all:", "--python-version", self.python, "--implementation", "cp"]
        for tag in self.platform_tags():
            options += ["--platform", tag]
        return options

    def markers(self) -> dict[str, str]:
        return {"python_version": self.python, "python_full_version": f"{self.python}.0", "os_name": "posix",
                "sys_platform": "linux", "platform_system": "Linux", "platform_machine": self.arch,
                "platform_python_implementation": "CPython", "implementation_name": "cpython",
                "implementation_version": f"{self.python}.0", "platform_release": "", "platform_version": ""}


def read_freeze(path: Path) -> dict[str, str]:
    """``pip freeze`` output → {canonical name: version}; ``name @ url`` lines count as present (version "")."""
    found: dict[str, str] = {}
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise BundleError(f"--against {path}: {exc.strerror}; give the target's `pip freeze` output") from None
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        if "==" in line:
            name, _, version = line.partition("==")
            found[canonicalize_name(name.strip())] = version.strip()
        elif " @ " in line:
            found[canonicalize_name(line.split(" @ ", 1)[0].strip())] = ""
    return found


def resolver_python(target: Target) -> tuple[str, bool]:
    """An interpreter of the target's minor version to run pip with, and whether it is one."""
    if f"{sys.version_info[0]}.{sys.version_info[1]}" == target.python:
        return sys.executable, True
    candidates = [shutil.which(f"python{target.python}")]
    candidates += sorted(str(p) for p in Path.home().glob(f".pyenv/versions/{target.python}.*/bin/python{target.python}"))
    candidates += [f"/usr/bin/python{target.python}", f"/usr/local/bin/python{target.python}"]
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            probe = subprocess.run([candidate, "-m", "pip", "--version"], capture_output=True, text=True)
            if probe.returncode == 0:
                return candidate, True
    return sys.executable, False


def pip_report(python: str, requirements: Sequence[str], target: Target, *, pip_args: Sequence[str] = (),
               constraints: dict[str, str] | None = None, log: Path | None = None) -> dict[str, Any]:
    """pip's resolution of ``requirements`` for ``target``, as its installation report."""
    with tempfile.TemporaryDirectory(prefix="farm-bundle-") as scratch:
        report = Path(scratch) / "report.json"
        command = [python, "-m", "pip", "install", "--dry-run", "--quiet", "--no-input", "--ignore-installed",
                   "--report", str(report), "--target", str(Path(scratch) / "t"), *target.pip_options(), *pip_args]
        if constraints:
            pins = Path(scratch) / "constraints.txt"
            pins.write_text("".join(f"{name}=={version}\n" for name, version in sorted(constraints.items())))
            command += ["--constraint", str(pins)]
        proc = subprocess.run([*command, *requirements], capture_output=True, text=True)
        if log is not None:
            with open(log, "a") as out:
                out.write(f"$ {' '.join(command + list(requirements))}\n{proc.stdout}{proc.stderr}\n")
        if proc.returncode != 0:
            errors = "\n".join(line for line in proc.stderr.splitlines() if "is ignored" not in line)[-3000:]
            raise BundleError(f"pip could not resolve {' '.join(requirements)} for Python {target.python} on "
                              f"{target.platform}:\n{errors}\nIf a package has no wheel for this platform, a newer glibc "
                              "(--platform manylinux_2_NN_…, at most the node's `ldd --version`) may have one")
        return json.loads(report.read_text())


@dataclass
class Package:
    name: str  # canonical
    version: str
    url: str
    sha256: str | None
    requires: list[str]
    wheel: str


@dataclass
class Plan:
    """What the bundle ships and what it leaves out, with reasons."""

    ship: dict[str, Package] = field(default_factory=dict)
    target_has: dict[str, dict[str, str]] = field(default_factory=dict)  # name → {version, target_version}
    left_out: dict[str, Package] = field(default_factory=dict)
    wanted_by: dict[str, list[str]] = field(default_factory=dict)  # name → requirement strings on it, with who asked
    env: dict[str, str] = field(default_factory=dict)


def packages_of(report: dict[str, Any]) -> dict[str, Package]:
    out: dict[str, Package] = {}
    for item in report.get("install", []):
        meta = item["metadata"]
        info = item.get("download_info", {})
        name = canonicalize_name(meta["name"])
        out[name] = Package(name=name, version=meta["version"], url=info.get("url", ""),
                            sha256=(info.get("archive_info", {}).get("hashes") or {}).get("sha256"),
                            requires=list(meta.get("requires_dist") or []), wheel=info.get("url", "").rsplit("/", 1)[-1])
    return out


def plan(packages: dict[str, Package], roots: Sequence[str], target: Target, freeze: dict[str, str],
         left_out: dict[str, LeftOut] = LEFT_OUT) -> Plan:
    """Walk from ``roots``; ship what is reached and neither the target's (at a compatible version) nor left out."""
    markers = target.markers()
    incompatible: set[str] = set()
    while True:  # more shipped packages can only add requirements: this stops
        result = Plan()
        queue: list[tuple[Requirement, str]] = [(Requirement(r), "(bundle)") for r in roots]
        seen: set[tuple[str, frozenset[str]]] = set()
        while queue:
            req, parent = queue.pop(0)
            name = canonicalize_name(req.name)
            result.wanted_by.setdefault(name, []).append(f"{parent}: {req}")
            key = (name, frozenset(req.extras))
            if key in seen:
                continue
            seen.add(key)
            if name in left_out and name not in {canonicalize_name(Requirement(r).name) for r in roots}:
                if name in packages:
                    result.left_out[name] = packages[name]
                result.env.update(dict(left_out[name].env))
                continue
            if name in freeze and name not in incompatible:
                result.target_has[name] = {"target_version": freeze[name],
                                           "version": packages[name].version if name in packages else ""}
                continue
            if name not in packages:
                raise BundleError(f"{parent} requires {req}, which pip's resolution does not have: resolve with a "
                                  f"Python {target.python} interpreter (markers), or report this")
            package = packages[name]
            result.ship[name] = package
            for text in package.requires:
                dep = Requirement(text)
                if dep.marker is not None and not any(_applies(dep.marker, markers, extra) for extra in ("", *req.extras)):
                    continue
                queue.append((Requirement(str(dep).split(";")[0]), f"{package.name} {package.version}"))
        newly = {name for name in result.target_has if not _satisfies(freeze[name], result.wanted_by[name])}
        if not newly - incompatible:
            return result
        incompatible |= newly


def _applies(marker: Marker, env: dict[str, str], extra: str) -> bool:
    return marker.evaluate({**env, "extra": extra})


def _satisfies(version: str, wanted: list[str]) -> bool:
    if not version:
        return True  # `name @ url`: the target's own build; trust it
    try:
        parsed = Version(version)
    except InvalidVersion:
        return False
    for line in wanted:
        spec = Requirement(line.split(": ", 1)[1]).specifier
        if not spec.contains(parsed, prereleases=True):
            return False
    return True
