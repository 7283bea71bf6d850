"""A bundle on disk: one xz tarball of a site folder, optionally split into parts, and ``bundle.json``.

    DIR/bundle.json                  what is inside and the SHA-256 of every part and of the whole
    DIR/<name>.tar.xz.part000 …      the tarball's parts (or DIR/<name>.tar.xz unsplit)
    DIR/unpack.py                    this file: verify and unpack with nothing but python3

Standard library only, and importing nothing of the farm: ``farm bundle`` copies this very
file next to the parts as ``unpack.py``, because the node that unpacks a bundle is
air-gapped and has a Python with torch but no farm, no pip index, not even the bundle's
own Ray or pydantic yet. On such a node:

    python3 DIR/unpack.py verify DIR/bundle.json
    python3 DIR/unpack.py unpack DIR/bundle.json --into /opt/bundles/vllm-0.26.0

Every part is checked (size, then SHA-256) before a byte is unpacked; a missing or corrupt
part is named. Unpacking goes to a temporary directory beside the target and is renamed
into place at the end, so a target that exists is complete.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

FORMAT = 1
MANIFEST = "bundle.json"
SITE = "site"  # the directory inside the tarball: what goes on PYTHONPATH
CHUNK = 1 << 20
UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2, "mib": 1024**2,
         "g": 1000**3, "gb": 1000**3, "gib": 1024**3}


class BundleError(Exception):
    """A bundle that cannot be verified or unpacked; the message names the file and what to do."""


def parse_size(text: str) -> int:
    """``58MiB`` → 60817408; ``100MB`` → 100000000; a bare number is bytes."""
    value = text.strip().lower().replace(" ", "")
    number = value.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = value[len(number):]
    if unit not in UNITS or not number:
        raise ValueError(f"size {text!r}: give a number and a unit, e.g. 58MiB, 100MB, 2GiB")
    size = int(float(number) * UNITS[unit])
    if size <= 0:
        raise ValueError(f"size {text!r} must be positive")
    return size


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def pack(site: Path, out: Path, name: str, *, split: int | None, manifest: dict[str, Any]) -> dict[str, Any]:
    """Tar and xz ``site`` (as ``site/`` inside) into ``out``, split it, and write ``bundle.json``.

    xz, not gzip: a bundle travels in parts over slow or size-capped links (vllm 0.24.0's bundle: 243.2 MiB
    with xz -6, 299.4 MiB with gzip -6; it takes minutes longer to make, 578 s against 149 s on 2 cores).
    Unpacking reads either.

    ``manifest`` carries what the caller knows (versions, packages, what was left out);
    this adds the archive, its parts with sizes and SHA-256, and the format. Returns it.
    """
    out.mkdir(parents=True, exist_ok=True)
    archive = out / f"{name}.tar.xz"
    with tarfile.open(archive, "w:xz", preset=6) as tar:
        # Sorted, owner-less entries: the same site makes the same member list on every machine.
        for path in sorted(site.rglob("*")):
            info = tar.gettarinfo(str(path), arcname=f"{SITE}/{path.relative_to(site).as_posix()}")
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if info.isreg():
                with open(path, "rb") as fh:
                    tar.addfile(info, fh)
            elif info.isdir() or info.issym():
                tar.addfile(info)
    whole: dict[str, Any] = {"name": archive.name, "size": archive.stat().st_size, "sha256": sha256_of(archive)}
    parts = [whole] if split is None or whole["size"] <= split else _split(archive, split)
    document = {**manifest, "format": FORMAT, "name": name, "site": SITE, "archive": whole, "parts": parts,
                "split_bytes": split}
    (out / MANIFEST).write_text(json.dumps(document, indent=1) + "\n")
    shutil.copyfile(__file__, out / "unpack.py")
    return document


def _split(archive: Path, size: int) -> list[dict[str, Any]]:
    parts = []
    with open(archive, "rb") as src:
        index = 0
        while True:
            part = archive.with_name(f"{archive.name}.part{index:03d}")
            digest = hashlib.sha256()
            written = 0
            with open(part, "wb") as dst:
                while written < size:
                    block = src.read(min(CHUNK, size - written))
                    if not block:
                        break
                    dst.write(block)
                    digest.update(block)
                    written += len(block)
            if written == 0:
                part.unlink()
                break
            parts.append({"name": part.name, "size": written, "sha256": digest.hexdigest()})
            index += 1
    archive.unlink()  # the parts are the bundle; `unpack.py join` makes the whole file again if wanted
    return parts


def read_manifest(path: Path) -> dict[str, Any]:
    """``bundle.json`` (or the directory holding it), parsed."""
    path = path / MANIFEST if path.is_dir() else path
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise BundleError(f"no bundle manifest at {path}; give the bundle.json that `farm bundle` wrote") from None
    except (OSError, ValueError) as exc:
        raise BundleError(f"{path} is not a readable bundle manifest ({exc}); copy it again from where the bundle was made") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT or not document.get("parts"):
        raise BundleError(f"{path}: not a bundle manifest of format {FORMAT}; make the bundle again with this farm")
    return document


def verify(manifest_path: Path) -> dict[str, Any]:
    """Check every part's presence, size and SHA-256, and the whole's; raise BundleError naming the first bad part."""
    document = read_manifest(manifest_path)
    base = _base(manifest_path)
    whole = hashlib.sha256()
    for part in document["parts"]:
        path = base / part["name"]
        if not path.is_file():
            raise BundleError(f"bundle part {part['name']} is missing from {base}: copy it there "
                              f"({len(document['parts'])} part(s) in all, listed in {MANIFEST})")
        size = path.stat().st_size
        if size != part["size"]:
            raise BundleError(f"bundle part {part['name']} has {size} bytes where {MANIFEST} says {part['size']}: "
                              "it is truncated or another file; copy it again")
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(CHUNK), b""):
                digest.update(block)
                whole.update(block)
        if digest.hexdigest() != part["sha256"]:
            raise BundleError(f"bundle part {part['name']} fails its SHA-256 check (corrupt in transit?): copy it again")
    if whole.hexdigest() != document["archive"]["sha256"]:
        raise BundleError(f"the joined parts of {base} fail the archive's SHA-256: parts from different bundles?")
    return document


class _Joined:
    """The parts read back to back as one file, for tarfile's stream mode."""

    def __init__(self, paths: list[Path]) -> None:
        self._paths: Iterator[Path] = iter(paths)
        self._fh: BinaryIO | None = None

    def read(self, size: int = -1) -> bytes:
        chunks = []
        while size != 0:
            if self._fh is None:
                path = next(self._paths, None)
                if path is None:
                    break
                self._fh = open(path, "rb")  # noqa: SIM115  (held across read() calls; closed when exhausted)
            block = self._fh.read(size if size > 0 else CHUNK)
            if not block:
                self._fh.close()
                self._fh = None
                continue
            chunks.append(block)
            if size > 0:
                size -= len(block)
        return b"".join(chunks)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()


def join(manifest_path: Path, out: Path) -> Path:
    """Verify, then write the parts as the one tarball ``out``."""
    document = verify(manifest_path)
    base = _base(manifest_path)
    joined = _Joined([base / p["name"] for p in document["parts"]])
    with open(out, "wb") as dst:
        for block in iter(lambda: joined.read(CHUNK), b""):
            dst.write(block)
    return out


def resplit(manifest_path: Path, size: int) -> dict[str, Any]:
    """Verify, then cut the bundle again into parts of at most ``size`` bytes (a link's cap changed); rewrite
    ``bundle.json``. The archive and its SHA-256 stay as they were: only the cut moves."""
    document = read_manifest(manifest_path)
    base = _base(manifest_path)
    archive = base / document["archive"]["name"]
    old = [base / p["name"] for p in document["parts"]]
    if old == [archive]:
        verify(manifest_path)
    else:  # join verifies before it writes
        join(manifest_path, archive.with_name(archive.name + ".joining")).rename(archive)
        for path in old:
            path.unlink()
    parts = [document["archive"]] if document["archive"]["size"] <= size else _split(archive, size)
    document = {**document, "parts": parts, "split_bytes": size}
    manifest = base / MANIFEST if manifest_path.is_dir() else manifest_path
    manifest.write_text(json.dumps(document, indent=1) + "\n")
    return document


def check_node(document: dict[str, Any]) -> list[str]:
    """What makes this node unfit for the bundle (another Python, too old a glibc); empty when it fits."""
    problems = []
    want = str(document.get("python", ""))
    have = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if want and want != have:
        problems.append(f"the bundle is for Python {want}; this is Python {have} ({sys.executable})")
    glibc = document.get("glibc")
    name, version = platform.libc_ver()
    if glibc and name == "glibc" and version and _version_tuple(version) < _version_tuple(glibc):
        problems.append(f"the bundle's wheels need glibc >= {glibc}; this node has {version}")
    return problems


def unpack(manifest_path: Path, into: Path, *, verified: bool = False) -> dict[str, Any]:
    """Verify (unless ``verified``), then unpack into ``into`` (``into/site`` is the PYTHONPATH entry).

    ``into`` must not exist; it appears complete or not at all.
    """
    document = read_manifest(manifest_path) if verified else verify(manifest_path)
    base = _base(manifest_path)
    if into.exists():
        raise BundleError(f"{into} exists: unpack into a new directory (or remove it first)")
    into.parent.mkdir(parents=True, exist_ok=True)
    staging = into.with_name(f".{into.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    joined = _Joined([base / p["name"] for p in document["parts"]])
    try:
        with tarfile.open(fileobj=joined, mode="r|*") as tar:  # type: ignore[call-overload]  # xz, or gzip (older bundles)
            # The data filter refuses absolute paths, links out of the target and device files.
            extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(staging, **extra)
        (staging / MANIFEST).write_text(json.dumps({**document, "unpacked_at": time.time()}, indent=1) + "\n")
        staging.rename(into)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        joined.close()
    return document


def _base(manifest_path: Path) -> Path:
    return manifest_path if manifest_path.is_dir() else manifest_path.parent


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".") if p.isdigit())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="unpack.py", description="Verify, join or unpack a farm vLLM bundle "
                                     "(standard library only: runs on an air-gapped node).")
    sub = parser.add_subparsers(dest="action", required=True)
    for action, text in (("verify", "check every part's size and SHA-256"),
                         ("join", "verify, then write the parts as one tarball"),
                         ("unpack", "verify, then unpack into a new directory (its site/ goes on PYTHONPATH)")):
        command = sub.add_parser(action, help=text)
        command.add_argument("manifest", type=Path, help="the bundle's bundle.json (or its directory)")
        if action == "join":
            command.add_argument("--out", type=Path, required=True)
        if action == "unpack":
            command.add_argument("--into", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        if args.action == "verify":
            document = verify(args.manifest)
            print(f"ok: {document['name']}: {len(document['parts'])} part(s), "
                  f"{document['archive']['size'] / 2**20:.1f} MiB, SHA-256 verified")
            for problem in check_node(document):
                print(f"warning: {problem}", file=sys.stderr)
        elif args.action == "join":
            print(f"joined into {join(args.manifest, args.out)}")
        else:
            document = unpack(args.manifest, args.into)
            print(f"unpacked {document['name']} into {args.into}; put {args.into / SITE} on PYTHONPATH")
            for problem in check_node(document):
                print(f"warning: {problem}", file=sys.stderr)
    except BundleError as exc:
        print(f"unpack.py: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
