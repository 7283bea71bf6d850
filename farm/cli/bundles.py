"""`farm bundle VERSION | verify | unpack`: offline vLLM bundles for air-gapped nodes."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parsers(sub: Any) -> None:
    bundle = sub.add_parser(
        "bundle", help="make an offline vLLM bundle for air-gapped nodes (VERSION), or verify / unpack one",
        usage="farm bundle VERSION --python X.Y --platform TAG --out DIR [options]\n"
              "       farm bundle verify BUNDLE_JSON\n"
              "       farm bundle unpack BUNDLE_JSON --into DIR\n"
              "       farm bundle split BUNDLE_JSON --split SIZE")
    bundle.add_argument("what", nargs="+", metavar="VERSION | verify BUNDLE_JSON | unpack BUNDLE_JSON | split BUNDLE_JSON")
    bundle.add_argument("--python", help="the node's Python, major.minor (e.g. 3.12)")
    bundle.add_argument("--platform", help="the node's manylinux tag, e.g. manylinux_2_31_x86_64 "
                        "(2_NN: at most the node's glibc, `ldd --version`)")
    bundle.add_argument("--against", type=Path, metavar="FREEZE", help="the node's `pip freeze`: what it has is left out")
    bundle.add_argument("--out", type=Path, help="a new directory for the bundle")
    bundle.add_argument("--split", metavar="SIZE", help="split the tarball into parts of at most SIZE (e.g. 58MiB)")
    bundle.add_argument("--extra", nargs="+", default=[], metavar="REQ", help="more requirements to bundle")
    bundle.add_argument("--ray", metavar="VERSION", help="the cluster's Ray (default: the Ray installed here)")
    bundle.add_argument("--find-links", action="append", default=[], metavar="DIR", help="passed to pip")
    bundle.add_argument("--index-url", help="passed to pip")
    bundle.add_argument("--no-index", action="store_true", help="passed to pip: only --find-links")
    bundle.add_argument("--keep-work", action="store_true", help="keep DIR/.work (the wheels and the site folder)")
    bundle.add_argument("--into", type=Path, help="for unpack: a new directory")
    bundle.set_defaults(handler=_bundle)


def _bundle(args: argparse.Namespace) -> int:
    from farm.bundles import pack
    from farm.errors import BundleError

    action, *rest = args.what
    try:
        if action in ("verify", "unpack", "split"):
            if len(rest) != 1:
                raise BundleError(f"farm bundle {action} takes one bundle.json (or its directory)")
            if action == "verify":
                document = pack.verify(Path(rest[0]))
                print(f"ok: {document['name']}: {len(document['parts'])} part(s), "
                      f"{document['archive']['size'] / 2**20:.1f} MiB, SHA-256 verified")
                return 0
            if action == "split":
                if not args.split:
                    raise BundleError("farm bundle split needs --split SIZE (e.g. 48MiB): the new parts' size")
                try:
                    size = pack.parse_size(args.split)
                except ValueError as exc:
                    raise BundleError(f"--split: {exc}") from None
                document = pack.resplit(Path(rest[0]), size)
                print(f"{document['name']}: {len(document['parts'])} part(s) of at most {args.split}, "
                      f"{document['archive']['size'] / 2**20:.1f} MiB, SHA-256 verified")
                return 0
            if args.into is None:
                raise BundleError("farm bundle unpack needs --into DIR (a new directory)")
            document = pack.unpack(Path(rest[0]), args.into)
            print(f"unpacked {document['name']} into {args.into}; its site folder: {args.into / pack.SITE}")
            return 0
        return _bundle_make(args, action, rest)
    except pack.BundleError as exc:
        raise BundleError(str(exc)) from None


def _bundle_make(args: argparse.Namespace, version: str, rest: list[str]) -> int:
    from farm.bundles import pack
    from farm.bundles.make import make_bundle
    from farm.errors import BundleError

    if rest:
        raise BundleError(f"farm bundle takes one VERSION, got {' '.join([version, *rest])}")
    missing = [flag for flag, value in (("--python", args.python), ("--platform", args.platform), ("--out", args.out))
               if not value]
    if missing:
        raise BundleError(f"farm bundle {version} needs {', '.join(missing)}; e.g. farm bundle {version} --python 3.12 "
                          "--platform manylinux_2_31_x86_64 --out bundles/vllm-" + version)
    try:
        split = pack.parse_size(args.split) if args.split else None
    except ValueError as exc:
        raise BundleError(f"--split: {exc}") from None
    pip_args = [*(f"--find-links={d}" for d in args.find_links), *(["--no-index"] if args.no_index else []),
                *([f"--index-url={args.index_url}"] if args.index_url else [])]
    document = make_bundle(version, python=args.python, platform_tag=args.platform, out=args.out, against=args.against,
                           split=split, extras=args.extra, ray_version=args.ray, pip_args=pip_args,
                           keep_work=args.keep_work)
    shipped = document["packages"]
    print(f"bundle {document['name']}: {document['archive']['size'] / 2**20:.1f} MiB in {len(document['parts'])} "
          f"part(s), {len(shipped)} packages ({document['site_bytes'] / 2**20:.0f} MiB unpacked), needs glibc >= "
          f"{document['glibc']}; made in {document['build_s']:.0f}s")
    print(f"  the target has: {', '.join(p['name'] for p in document['target_has']) or '-'}")
    print(f"  left out (unused on the farm's paths): {', '.join(p['name'] for p in document['left_out']) or '-'}")
    for rule in document["stripped"]:
        if rule["files"]:
            print(f"  stripped {rule['pattern']}: {rule['files']} files, {rule['bytes'] / 2**20:.1f} MiB")
    print(f"  {args.out / pack.MANIFEST}; on the node: python3 {args.out / 'unpack.py'} unpack "
          f"{args.out / pack.MANIFEST} --into DIR")
    return 0
