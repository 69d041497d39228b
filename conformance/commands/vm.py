"""``conformance vm build | box | up | down | status | ssh-config | clean``: the disposable-VM machinery by hand.

- ``build``: build (or confirm) the cached guest image, showing each step and the total duration.
- ``box``: package the image as a Vagrant box (libvirt provider) and ``vagrant box add`` it.
- ``up``: start a VM that outlives the command (``destroy=never``) and print how to reach it.
- ``down ID...|--all``: destroy kept VMs.  ``status``: list every VM with a state file.
- ``ssh-config ID``: an OpenSSH ``Host`` stanza for a VM.  ``clean``: kill what killed runs left behind.
"""

from __future__ import annotations

import argparse
import sys
import time

from tabulate import tabulate

from conformance.errors import TargetError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("vm", help="build the guest image, start/stop/list/clean disposable VMs")
    vm_sub = parser.add_subparsers(dest="vm_command", metavar="VM_COMMAND")
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])

    build = vm_sub.add_parser("build", help="build the guest image (cached; rebuilt only when its recipe changes)")
    build.add_argument("release", nargs="?", default=None, metavar="RELEASE",
                       help="guest Debian release: bullseye (Linux 5.10), bookworm (6.1, the default), trixie (6.12)")
    build.add_argument("--force", action="store_true", help="rebuild even when the cached image is current")
    build.add_argument("-q", "--quiet", action="store_true", help="only the step lines, not mmdebstrap's output")
    build.set_defaults(func=cmd_build)

    box = vm_sub.add_parser("box", help="package the image as a Vagrant box and add it (vagrant box add)")
    box.add_argument("release", nargs="?", default=None, metavar="RELEASE", help="guest release (as for build)")
    box.set_defaults(func=cmd_box)

    up = vm_sub.add_parser("up", help="start a VM that stays up after this command")
    up.add_argument("--backend", choices=("qemu", "vagrant"), default="qemu")
    up.add_argument("--release", help="guest release (as for build)")
    up.add_argument("--cgroup", choices=("v2", "v1", "hybrid"), default="v2", help="guest cgroup layout")
    up.add_argument("--memory", type=int, default=2048, help="MB")
    up.add_argument("--cpus", type=int, default=2)
    up.add_argument("--no-snapshot", action="store_true", help="boot cold instead of restoring the golden snapshot")
    up.set_defaults(func=cmd_up)

    down = vm_sub.add_parser("down", help="destroy VMs by id (see vm status)")
    down.add_argument("ids", nargs="*", metavar="ID")
    down.add_argument("--all", action="store_true", help="every VM, also those of runs still going")
    down.set_defaults(func=cmd_down)

    status = vm_sub.add_parser("status", help="list VMs with a state file")
    status.set_defaults(func=cmd_status)

    ssh_config = vm_sub.add_parser("ssh-config", help="print an OpenSSH config stanza for a VM")
    ssh_config.add_argument("id", metavar="ID")
    ssh_config.set_defaults(func=cmd_ssh_config)

    clean = vm_sub.add_parser("clean", help="kill and remove VMs whose harness process is gone")
    clean.add_argument("--all", action="store_true", help="also kept VMs and VMs of runs still going")
    clean.add_argument("--images", action="store_true",
                       help="also remove cached images (and Vagrant boxes) of other recipes")
    clean.set_defaults(func=cmd_clean)


def cmd_build(args: argparse.Namespace) -> int:
    import shutil

    from vm.image import BuildReport, ensure_image, image_dir, load_image, recipe_for

    recipe = recipe_for(args.release)
    start = time.monotonic()
    if args.force and load_image(recipe) is not None:
        shutil.rmtree(image_dir(recipe))
    cached = load_image(recipe)
    if cached is not None:
        print(f"image {recipe.key()} ({recipe.suite}, Linux {cached.kernel_release}) is up to date: "
              f"{cached.directory}")
        return 0
    report = BuildReport()

    def progress(line: str) -> None:
        if args.quiet and line.startswith("  "):
            return
        print(f"[{time.monotonic() - start:6.1f}s] {line}", flush=True)

    image = ensure_image(recipe, progress=progress, report=report)
    print(tabulate([(name, f"{seconds:.1f}") for name, seconds in report.steps], headers=["step", "seconds"]))
    print(f"image {image.key} ({recipe.suite}, Linux {image.kernel_release}) built in "
          f"{time.monotonic() - start:.1f} s: {image.directory}")
    return 0


def cmd_box(args: argparse.Namespace) -> int:
    from vm.image import DEFAULT_RELEASE, ensure_image, recipe_for
    from vm.vagrant import ensure_box

    start = time.monotonic()
    release = args.release or DEFAULT_RELEASE
    image = ensure_image(recipe_for(release), progress=lambda line: print(line, flush=True))
    name = ensure_box(image, release, progress=lambda line: print(line, flush=True))
    print(f"vagrant box {name} ready ({time.monotonic() - start:.1f} s)")
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from conformance.targets import get_target

    release = f":{args.release}" if args.release else ""
    if args.backend == "vagrant":
        spec = f"vagrant{release}?destroy=never&memory={args.memory}&cpus={args.cpus}&cgroup={args.cgroup}"
    else:
        spec = f"qemu{release}?destroy=never&memory={args.memory}&cpus={args.cpus}&cgroup={args.cgroup}"
        if args.no_snapshot:
            spec += "&snapshot=false"
    target = get_target(spec)
    start = time.monotonic()
    target.up()
    status = target.status()  # type: ignore[attr-defined]
    target.down()
    print(f"VM {status.get('vm_id')} up in {time.monotonic() - start:.1f} s: {status.get('ssh')}")
    print(f"  conformance vm ssh-config {status.get('vm_id')}   conformance vm down {status.get('vm_id')}")
    return 0


def _find(vm_id: str) -> object:
    from vm.state import load_records

    for record in load_records():
        if record.vm_id == vm_id:
            return record
    raise TargetError(f"no VM {vm_id!r} (see: conformance vm status)")


def cmd_down(args: argparse.Namespace) -> int:
    from vm.state import destroy_record, load_records

    if not args.ids and not args.all:
        print("conformance vm down: give VM ids or --all", file=sys.stderr)
        return 2
    records = load_records()
    chosen = records if args.all else [r for r in records if r.vm_id in args.ids]
    missing = set(args.ids) - {r.vm_id for r in chosen}
    for record in chosen:
        destroy_record(record)
        print(f"destroyed {record.vm_id}")
    if missing:
        print(f"conformance vm down: no such VM: {', '.join(sorted(missing))}", file=sys.stderr)
        return 2
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from vm.state import load_records, same_process

    rows = []
    for record in load_records():
        if record.kept:
            owner = "kept"
        elif record.orphaned():
            owner = f"{record.owner_pid} (gone)"
        else:
            owner = str(record.owner_pid)
        alive = same_process(record.pid, record.pid_start) if record.backend == "qemu" else None
        state = {True: "running", False: "stopped", None: "-"}[alive]
        ssh = f"127.0.0.1:{record.port}" if record.port else record.extra.get("ssh", "-")
        age = f"{time.time() - record.created:.0f}s"
        rows.append((record.vm_id, record.backend, state, record.pid or "-", ssh, owner, age))
    if not rows:
        print("no VMs")
        return 0
    print(tabulate(rows, headers=["id", "backend", "state", "pid", "ssh", "owner", "age"]))
    return 0


def cmd_ssh_config(args: argparse.Namespace) -> int:
    from vm.state import VmRecord

    record = _find(args.id)
    assert isinstance(record, VmRecord)
    if record.backend == "vagrant":
        from vm.vagrant import ssh_config_text

        print(ssh_config_text(record), end="")
        return 0
    key = record.extra.get("key", "")
    print(
        f"Host {record.vm_id}\n  HostName 127.0.0.1\n  Port {record.port}\n  User root\n"
        f"  IdentityFile {key}\n  IdentitiesOnly yes\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n"
    )
    return 0


def cmd_clean(args: argparse.Namespace) -> int:
    from vm.state import load_records, reap_orphans

    removed = reap_orphans(everything=args.all)
    for record in removed:
        print(f"removed {record.backend} VM {record.vm_id}")
    if args.images:
        import shutil

        from vm.image import RELEASES, image_dir, recipe_for
        from vm.vagrant import box_name, remove_stale_boxes

        # Each release's current image (and box) stays: they are what qemu:RELEASE and vagrant:RELEASE boot.
        current = {release: image_dir(recipe_for(release)) for release in RELEASES}
        in_use = {str(record.extra.get("image")) for record in load_records()}
        images = next(iter(current.values())).parent
        if images.is_dir():
            for directory in images.iterdir():
                if directory.name.split(".")[0] in in_use:
                    print(f"kept image {directory.name}: a VM still uses it")
                elif directory.name.endswith(".partial"):
                    continue  # a build in progress, or a dead one that its next build removes
                elif directory not in current.values():
                    shutil.rmtree(directory, ignore_errors=True)
                    print(f"removed image {directory.name}")
        for name in remove_stale_boxes({box_name(release, path.name) for release, path in current.items()}):
            print(f"removed vagrant box {name}")
    if not removed:
        print("no leftover VMs")
    return 0
