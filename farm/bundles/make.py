"""``farm bundle VERSION``: resolve, download, install into one site folder, check, strip, pack.

    DIR/bundle.json, DIR/<name>.tar.gz[.partNNN], DIR/unpack.py   (see farm.bundles.pack)
    DIR/build.log                                                  every pip command and its output

The site folder goes on ``PYTHONPATH`` in front of the target's own environment (its Python
with torch): the bundle holds only what that environment lacks.
"""

from __future__ import annotations

import csv
import platform
import shutil
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name

from farm.bundles import imports, pack
from farm.bundles.resolve import LEFT_OUT, Package, Plan, Target, packages_of, pip_report, plan, read_freeze, resolver_python
from farm.errors import BundleError, translated
from farm.text import strip_rule_of

# What a Hopper run of the farm does not load, removed from the site folder after install.
# Each pattern is matched against paths relative to the site folder (fnmatch, `*` crosses `/`); `glob!keep`
# spares the paths that contain `keep`.
STRIP: tuple[tuple[str, str], ...] = (
    ("vllm/vllm_flash_attn/_vllm_fa2_C*.so",
     "FlashAttention-2 kernels (~290 MiB): Hopper runs FA3 (_vllm_fa3_C); the FA2 import is in a try/except "
     "(vllm/vllm_flash_attn/flash_attn_interface.py) and FA2 is chosen only below compute capability 9.0"),
    ("vllm/vllm-rs", "the Rust frontend binary of `vllm serve` (VLLM_RUST_FRONTEND_PATH, vllm/envs.py); "
     "the offline LLM engine never starts it"),
    ("*/include/*!deep_gemm/include/",
     "C/C++ headers (CUTLASS, the sm100 FMHA) for JIT builds the farm's cells do not run (fmha_sm100 is Blackwell "
     "only); DeepGEMM's stay: on Hopper vLLM JIT-compiles its FP8 block-quantized GEMM from them (every fp8-block "
     "cell of vLLM 0.20.0-0.24.0 failed on an H100 with 'Failed to open: …/deep_gemm/include/…' without them)"),
    ("*/__pycache__/*", "bytecode caches: the node's Python writes its own"),
    ("*/tests/*", "packages' own test suites"),
    ("bin/*", "console scripts: their #! line names the interpreter that made the bundle, not the node's; "
     "use `python -m ray.scripts.scripts` and the like"),
)


def other_python_extensions(target: Target) -> tuple[str, str]:
    own = "cpython-" + target.python.replace(".", "")
    return (f"*.cpython-3*-*.so!{own}",
            f"extension modules built for other Python versions than {target.python} "
            "(vllm/third_party/deep_gemm ships one per version)")


def make_bundle(
    version: str,
    *,
    python: str,
    platform_tag: str,
    out: Path,
    against: Path | None = None,
    split: int | None = None,
    extras: Sequence[str] = (),
    ray_version: str | None = None,
    pip_args: Sequence[str] = (),
    keep_work: bool = False,
    say: Callable[[str], Any] = print,
) -> dict[str, Any]:
    """Make the bundle of ``vllm==version`` in ``out``; returns its manifest (also ``out/bundle.json``)."""
    from farm.settings import FARM_CELL_REQUIREMENTS

    started = time.monotonic()
    target = Target(python, platform_tag)
    ray_version = ray_version or _installed_ray()
    roots = [f"vllm=={version}", f"ray=={ray_version}", *FARM_CELL_REQUIREMENTS, *extras]
    freeze = read_freeze(against) if against else {}
    if out.exists() and any(p.name != "build.log" for p in out.iterdir()):
        raise BundleError(f"--out {out} is not empty: give a new directory (bundles are never overwritten)")
    out.mkdir(parents=True, exist_ok=True)
    log = out / "build.log"
    work = out / ".work"
    shutil.rmtree(work, ignore_errors=True)
    resolver, packages, chosen, notes = _resolve(target, roots, freeze, pip_args, log, say)
    files = _download(resolver, chosen.ship.values(), target, pip_args, work / "wheels", log, say)
    site = _install(resolver, files, target, pip_args, work / "site", log, say)
    left_out, kept = dict(LEFT_OUT), {}
    while True:
        blocking, review = left_out_imports(site, chosen)
        if not blocking:
            break
        # What LEFT_OUT names is left out of every release unless this release's vLLM imports it where the
        # farm goes (vllm 0.22.1's FP8 path imports humming; 0.26.0's does not): keep it, and say why.
        for name, why in blocking.items():
            kept[name] = why
            left_out.pop(name)
            say(f"keeping {name}: {why}")
        wider = plan(packages, roots, target, freeze, left_out)
        more = _download(resolver, [p for n, p in wider.ship.items() if n not in chosen.ship], target, pip_args,
                         work / f"wheels-kept{len(kept)}", log, say)
        files, chosen = files + more, wider
        site = _install(resolver, files, target, pip_args, work / "site", log, say)
    stripped = strip(site, target)
    name = f"vllm-{version}-cp{target.python.replace('.', '')}-{target.platform}"
    manifest = _manifest(version, target, ray_version, roots, against, chosen, files, review, stripped, site, notes, kept)
    say(f"packing {manifest['site_bytes'] / 2**20:.0f} MiB of site folder …")
    with translated(BundleError, f"packing the bundle into {out}", OSError, tarfile.TarError):
        document = pack.pack(site, out, name, split=split, manifest=manifest)
    if not keep_work:
        shutil.rmtree(work, ignore_errors=True)
    document["build_s"] = round(time.monotonic() - started, 1)
    return document


def _resolve(target: Target, roots: list[str], freeze: dict[str, str], pip_args: Sequence[str], log: Path,
             say: Callable[[str], Any]) -> tuple[str, dict[str, Package], Plan, list[str]]:
    """The resolver's Python, the resolved packages, the plan and its notes.

    Resolved a second time with the target's own versions pinned when the target has some of the packages:
    those versions, not pip's first choice, are what the shipped packages meet on the node.
    """
    resolver, exact = resolver_python(target)
    if not exact:
        say(f"farm bundle: no Python {target.python} with pip found; resolving with {resolver}, whose environment "
            "markers may differ (install python" + target.python + " for an exact resolution)")
    say(f"resolving {' '.join(roots)} for Python {target.python} on {target.platform} (pip of {resolver}) …")
    packages = packages_of(pip_report(resolver, roots, target, pip_args=pip_args, log=log))
    chosen = plan(packages, roots, target, freeze)
    notes: list[str] = []
    pins = {name: freeze[name].split("+")[0] for name in chosen.target_has if freeze[name]}
    if pins:
        say(f"resolving again with the {len(pins)} packages the target has pinned to its versions …")
        try:
            packages = packages_of(pip_report(resolver, roots, target, pip_args=pip_args, constraints=pins, log=log))
            chosen = plan(packages, roots, target, freeze)
        except BundleError as exc:
            notes.append(f"the resolution pinned to the target's versions failed, so the first one is used: {exc}")
    if "vllm" not in chosen.ship:
        raise BundleError("the target already has vLLM (its freeze lists vllm): nothing to bundle")
    return resolver, packages, chosen, notes


def _download(resolver: str, ship: Iterable[Package], target: Target, pip_args: Sequence[str], wheels: Path,
              log: Path, say: Callable[[str], Any]) -> list[Path]:
    """The wheels of ``ship``, downloaded into ``wheels`` (the manifest records each one's checksum)."""
    ship = list(ship)
    say(f"downloading {len(ship)} wheels …")
    _pip(resolver, ["download", "--no-deps", "--dest", str(wheels), *target.pip_options(), *pip_args,
                    *(f"{p.name}=={p.version}" for p in ship)], log)
    return sorted(wheels.glob("*.whl"))


def _install(resolver: str, files: list[Path], target: Target, pip_args: Sequence[str], site: Path, log: Path,
             say: Callable[[str], Any]) -> Path:
    """A new site folder of exactly ``files`` (``--no-index``), checked file by file against their RECORDs.

    Always all wheels into an empty folder: ``pip install --target`` into a folder that already has a top-level
    directory skips that directory with only a warning, so a second round's opentelemetry-api, whose
    ``opentelemetry/`` namespace the first round's exporters had made, lost all its modules (vLLM 0.20.0 and
    0.22.1's bundles, on an H100: Ray's dashboard agent failed on ``from opentelemetry import metrics``).
    """
    shutil.rmtree(site, ignore_errors=True)
    say(f"installing {len(files)} wheels into one site folder …")
    _pip(resolver, ["install", "--no-deps", "--no-compile", "--no-index", "--target", str(site),
                    *target.pip_options(), *map(str, files)], log)
    missing = missing_files(site)
    if missing:
        shown = "; ".join(f"{dist}: {', '.join(paths[:3])}{' …' if len(paths) > 3 else ''} ({len(paths)} files)"
                          for dist, paths in sorted(missing.items()))
        raise BundleError(f"pip left files its RECORDs list out of {site} (see the warnings in {log}): {shown}")
    return site


def missing_files(site: Path, stripped: Iterable[str] = ()) -> dict[str, list[str]]:
    """Per installed distribution (its ``*.dist-info`` name), the files its RECORD lists that ``site`` lacks.

    Paths outside the site folder (``../``: console scripts pip's ``--target`` puts elsewhere) are not checked, nor
    those a ``stripped`` pattern (``STRIP``'s form, ``glob!keep``) removed on purpose.
    """
    rules = list(stripped)
    missing: dict[str, list[str]] = {}
    for record in sorted(site.glob("*.dist-info/RECORD")):
        for row in csv.reader(record.read_text(errors="replace").splitlines()):
            path = row[0] if row else ""
            if not path or path.startswith(("../", "/")) or (site / path).exists() or (site / path).is_symlink():
                continue
            if strip_rule_of(path, rules):
                continue
            missing.setdefault(record.parent.name, []).append(path)
    return missing


def _manifest(version: str, target: Target, ray_version: str, roots: list[str], against: Path | None, chosen: Plan,
              files: list[Path], review: dict[str, list[str]], stripped: list[dict[str, Any]], site: Path,
              notes: list[str], kept: dict[str, str]) -> dict[str, Any]:
    """``bundle.json`` without the parts: what a node needs to trust and use the bundle, and a reviewer to audit it."""
    return {
        "vllm": version,
        "python": target.python,
        "platform": target.platform,
        "glibc": _glibc_needed(files) or target.glibc,
        "ray": ray_version,
        "requirements": roots,
        "against": str(against) if against else None,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "created_on": platform.node(),
        "env": chosen.env,  # set in every cell's actor (see LEFT_OUT: what vLLM must not reach for)
        "packages": [{"name": p.name, "version": p.version, "wheel": f.name, "size": f.stat().st_size,
                      "sha256": pack.sha256_of(f)} for p, f in _pair(chosen, files)],
        "target_has": [{"name": n, **v} for n, v in sorted(chosen.target_has.items())],
        "left_out": [{"name": p.name, "version": p.version, "reason": LEFT_OUT[p.name].reason,
                      "lazy_imports": review.get(p.name, [])} for p in sorted(chosen.left_out.values(), key=lambda p: p.name)],
        # Named in LEFT_OUT but shipped: this vLLM imports them where the farm goes.
        "kept": [{"name": name, "reason": why} for name, why in sorted(kept.items())],
        "stripped": stripped,
        "site_bytes": _size(site),
        "pth_files": sorted(p.name for p in site.glob("*.pth")),  # not run from PYTHONPATH: listed for review
        "notes": notes,
    }


def left_out_imports(site: Path, chosen: Plan) -> tuple[dict[str, str], dict[str, list[str]]]:
    """One walk of vLLM's source: the left-out packages it imports unguarded on the farm's paths (name → where,
    and how it got there), and for every left-out package its lazy imports, for review."""
    if not (site / "vllm").is_dir():
        return {}, {}
    definite = imports.reach(site)
    blocking, review = {}, {}
    for name in chosen.left_out:
        tops = LEFT_OUT[name].imports
        unguarded = definite.unguarded(tops)
        if unguarded:
            first = unguarded[0]
            blocking[name] = (f"{first.where()} imports {first.module} when vLLM starts (via "
                              f"{' ← '.join(definite.chain(first.importer)[:4]) or 'an entry module'})")
        review[name] = sorted({s.where() for s in definite.lazily(tops)})
    return blocking, review


def strip(site: Path, target: Target) -> list[dict[str, Any]]:
    """Remove what a Hopper run does not load (``STRIP``); returns per rule the files and bytes removed."""
    rules = [*STRIP, other_python_extensions(target)]
    done = []
    paths = sorted(p for p in site.rglob("*") if p.is_file() or p.is_symlink())
    for pattern, reason in rules:
        removed, size = 0, 0
        for path in paths:
            relative = path.relative_to(site).as_posix()
            if not path.exists() and not path.is_symlink():
                continue
            if strip_rule_of(relative, [pattern]):
                size += path.lstat().st_size
                path.unlink()
                removed += 1
        done.append({"pattern": pattern, "reason": reason, "files": removed, "bytes": size})
    for directory in sorted((p for p in site.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        if not any(directory.iterdir()):
            directory.rmdir()
    return done


def _pip(python: str, args: list[str], log: Path) -> None:
    command = [python, "-m", "pip", *args, "--no-input", "--progress-bar", "off", "--disable-pip-version-check"]
    with open(log, "a") as out:
        out.write(f"$ {' '.join(command)}\n")
        out.flush()
        proc = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise BundleError(f"`pip {args[0]}` exited {proc.returncode} (all of it in {log}):\n{tail}")


def _pair(chosen: Plan, files: list[Path]) -> list[tuple[Any, Path]]:
    by_name: dict[str, Path] = {}
    for f in files:
        by_name[canonicalize_name(f.name.split("-")[0])] = f
    missing = sorted(set(chosen.ship) - set(by_name))
    if missing:
        raise BundleError(f"pip downloaded no wheel for {', '.join(missing)}; see build.log")
    return [(p, by_name[n]) for n, p in sorted(chosen.ship.items())]


def _glibc_needed(files: list[Path]) -> str | None:
    """The newest glibc any shipped wheel needs, from the oldest manylinux tag each one carries."""
    needed = 0
    for f in files:
        platforms = f.name[:-4].split("-")[-1].split(".")
        minors = [_manylinux_minor(p) for p in platforms]
        known = [m for m in minors if m is not None]
        if known:
            needed = max(needed, min(known))
    return f"2.{needed}" if needed else None


def _manylinux_minor(tag: str) -> int | None:
    legacy = {"manylinux1": 5, "manylinux2010": 12, "manylinux2014": 17}
    for prefix, minor in legacy.items():
        if tag.startswith(prefix + "_"):
            return minor
    if tag.startswith("manylinux_2_"):
        return int(tag.split("_")[2])
    return None


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _installed_ray() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ray")
    except PackageNotFoundError:
        raise BundleError("no Ray installed here to take the cluster's version from: give --ray VERSION") from None


__all__ = ["STRIP", "left_out_imports", "make_bundle", "missing_files", "strip"]
