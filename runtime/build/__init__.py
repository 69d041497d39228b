"""``refrt build``: Dockerfiles into images, with BuildKit's syntax and Docker's semantics.

Map: ``parser`` (text -> instructions -> stages, line-numbered errors), ``expand`` (quotes, escapes, ``$VAR``),
``dockerignore``, ``context`` (COPY/ADD sources, globs, writing into a rootfs), ``cache`` (step keys and
entries under ``root/build-cache``), ``builder`` (runs the stages on the store and the container runtime;
its instruction handlers are in ``config_steps`` and ``fs_steps``, over ``session`` and ``state``),
``errors`` (every build failure exits 1, as ``docker build``).
"""

from runtime.build.builder import BuildOptions, build
from runtime.build.errors import BuildError, DockerfileError
from runtime.build.parser import parse

__all__ = ["BuildError", "BuildOptions", "DockerfileError", "build", "parse"]
