"""refrt's registry client: ``pull(ctx, ref) -> Image`` and ``push(ctx, ref) -> digest`` over the OCI
distribution API, with docker's login store. Modules: ``client`` (HTTP, auth, errors mapping), ``auth``
(challenges, tokens, config.json), ``manifests`` (media types, platform choice), ``pull``, ``push``.

The functions are bound here on purpose: ``runtime.registry.pull`` is the function (for ``FROM`` and ``run`` of
an absent image); the module of the same name stays importable as ``from runtime.registry.pull import pull``.
"""

from runtime.registry.pull import pull
from runtime.registry.push import push

__all__ = ["pull", "push"]
