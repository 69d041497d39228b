#!/usr/bin/env bash
# Prepare the host for the VM backends (idempotent).
# libvirt re-probes qemu's capabilities on every call (about a minute each) while /dev/kvm is root-only, as it is on
# some machines: give it to the kvm group, as udev does on a standard Debian host.
set -euo pipefail
if [ -c /dev/kvm ] && getent group kvm >/dev/null; then
    if [ "$(stat -c %G:%a /dev/kvm)" != "kvm:660" ]; then
        chgrp kvm /dev/kvm && chmod 660 /dev/kvm || echo "setup.d/vm.sh: could not set /dev/kvm to kvm:660" >&2
    fi
fi
