"""``refrt build``: docker's ``build`` command line.

    refrt build [-t NAME:TAG]... [-f FILE] [--build-arg K=V]... [--target STAGE] [--no-cache] [--label K=V]...
                [-q] [--iidfile FILE] [--progress auto|plain|tty] CONTEXT|-

``-`` reads the context from stdin, as docker's: a tar archive (plain, gzip, bzip2 or xz), or else a Dockerfile
alone (then the context is empty).

Progress goes to stderr in BuildKit's plain style (``#3 [build 2/5] RUN ...``, ``#3 CACHED``, ending with
``writing image sha256:...``) and stdout stays empty, as with BuildKit; ``-q`` prints nothing but the image id,
on stdout. As ``docker build``, any build failure (Dockerfile error, missing context
file, a RUN that exits non-zero) exits 1; a malformed command line exits 125.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from runtime import safetar
from runtime.build.builder import BuildOptions, build
from runtime.cli import Context
from runtime.errors import UsageError
from runtime.store.reference import parse_reference


def register(sub: Any) -> None:
    p = sub.add_parser("build", help="build an image from a Dockerfile")
    p.add_argument("-t", "--tag", action="append", default=[], help="name and optionally a tag (name:tag)")
    p.add_argument("-f", "--file", help="the Dockerfile (default CONTEXT/Dockerfile; - reads stdin)")
    p.add_argument("--build-arg", action="append", default=[], help="set a build-time variable (K=V, or K)")
    p.add_argument("--target", help="build only up to this stage")
    p.add_argument("--no-cache", action="store_true", help="do not use the build cache")
    p.add_argument("--label", action="append", default=[], help="set metadata on the image (K=V)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the image id")
    p.add_argument("--iidfile", default="", help="write the image ID to the file")
    p.add_argument("--progress", default="auto", choices=["auto", "plain", "tty"],
                   help="progress output (refrt prints BuildKit's plain style for all three)")
    p.add_argument("context", metavar="CONTEXT", help="the build context directory, or - for stdin")
    p.set_defaults(func=run_build)


def _pairs(values: list[str], flag: str, *, from_env: bool) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
        key, eq, val = value.partition("=")
        if not key:
            raise UsageError(f"invalid {flag} {value!r}: expected KEY=VALUE")
        if not eq:
            if not from_env:
                raise UsageError(f"invalid {flag} {value!r}: expected KEY=VALUE")
            if key not in os.environ:
                continue  # docker: --build-arg K takes K from the environment, or is ignored
            val = os.environ[key]
        out[key] = val
    return out


def run_build(args: argparse.Namespace, ctx: Context) -> int:
    for tag in args.tag:
        parse_reference(tag)  # a bad -t fails before any work, as docker's
    if args.context != "-":
        return _build(args, ctx, Path(args.context), None)
    if args.file == "-":
        raise UsageError("invalid argument: can't use stdin for both build context and dockerfile")
    data = sys.stdin.buffer.read()
    with tempfile.TemporaryDirectory(prefix="refrt-build-context-") as scratch:
        context = Path(scratch)
        try:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
                safetar.extract_all(tar, context, "data")
            dockerfile_text = None
        except tarfile.TarError:
            dockerfile_text = data.decode("utf-8", errors="surrogateescape")
        return _build(args, ctx, context, dockerfile_text)


def _build(args: argparse.Namespace, ctx: Context, context: Path, dockerfile_text: str | None) -> int:
    options = BuildOptions(
        context=context,
        tags=list(args.tag),
        build_args=_pairs(args.build_arg, "--build-arg", from_env=True),
        labels=_pairs(args.label, "--label", from_env=False),
        target=args.target,
        no_cache=args.no_cache,
        out=None if args.quiet else sys.stderr,
    )
    if dockerfile_text is not None:
        options.dockerfile_text = dockerfile_text
    elif args.file == "-":
        options.dockerfile_text = sys.stdin.read()
    elif args.file:
        options.dockerfile = Path(args.file) if args.context != "-" else context / args.file
    image = build(ctx, options)
    if args.iidfile:
        try:
            Path(args.iidfile).write_text(image.id)
        except OSError as exc:
            raise UsageError(f"failed to write image ID to the file: {exc}") from None
    if args.quiet:
        print(image.id, flush=True)
    return 0
