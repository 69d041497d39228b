"""refrt: the reference container runtime carried by the conformance harness.

Standard library only, so the package can be copied onto a bare Debian host that has just python3 and run as
``python3 -m runtime``. Map of the package (see docs/architecture.md):

- ``cli/``        the docker-compatible command line, one module per command group
- ``errors``      the one exception hierarchy; each error carries docker's exit code
- ``paths``       where state lives (``--root`` / ``REFRT_ROOT``, ``--state`` / ``REFRT_STATE``)
- ``locking``     file locks that make concurrent CLI calls safe
- ``store/``      content-addressed image store, layers, overlay, import/load/save
- ``container/``  namespaces, rootfs set-up, monitor, exec
- ``cgroups/``    one interface, a v1 and a v2 driver picked at run time
- ``network/``    bridges, veth, IPAM, published ports; ``volumes`` for bind/named/anonymous volumes
- ``build/``      Dockerfile parser and builder with a layer cache
- ``registry/``   OCI distribution client: login, push, pull
"""

__version__ = "0.1.0"
