"""``refrt login | logout | push | pull``: docker's registry commands.

Registry failures exit 1, as docker's client does for an error answered by the daemon; bad flags stay 125.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import TYPE_CHECKING, Any

from runtime.cli import Context
from runtime.errors import UsageError
from runtime.store.reference import parse_reference

if TYPE_CHECKING:
    from runtime.registry.auth import Credentials

# runtime.registry is imported inside the handlers: http.client and ssl would slow every other command's start.

#: Exit status of a registry command the registry refused (docker's client exits 1).
REGISTRY_FAILURE = 1


def _read_credentials(args: argparse.Namespace) -> Credentials:
    from runtime.registry.auth import Credentials

    username: str | None = args.username
    password: str | None = args.password
    if args.password_stdin:
        if password:
            raise UsageError("--password and --password-stdin are mutually exclusive")
        if not username:
            raise UsageError("must provide --username with --password-stdin")
        password = sys.stdin.read().rstrip("\r\n")
    elif password:
        print("WARNING! Using --password via the CLI is insecure. Use --password-stdin.", file=sys.stderr)
    if not username:
        if not sys.stdin.isatty():
            raise UsageError("cannot prompt for a username: stdin is not a terminal (use -u)")
        username = input("Username: ").strip()
    if not password:
        if not sys.stdin.isatty():
            raise UsageError("cannot prompt for a password: stdin is not a terminal (use --password-stdin)")
        password = getpass.getpass("Password: ")
    if not username or not password:
        raise UsageError("username and password are required")
    return Credentials(username, password)


def cmd_login(args: argparse.Namespace, ctx: Context) -> int:
    from runtime.registry.auth import CredentialStore
    from runtime.registry.client import RegistryClient
    from runtime.registry.endpoints import endpoint_for, server_domain
    from runtime.registry.errors import RegistryError

    domain = server_domain(args.server)

    store = CredentialStore(ctx.config_dir)
    stored = store.get(domain)
    if stored is not None and not (args.username or args.password or args.password_stdin):
        print("Authenticating with existing credentials...")
        credentials = stored
    else:
        credentials = _read_credentials(args)
    try:
        with RegistryClient(endpoint_for(domain), credentials=credentials) as client:
            client.login()
    except RegistryError as exc:
        print(f"refrt: login to {domain} failed: {exc}", file=sys.stderr)
        return REGISTRY_FAILURE
    if credentials != stored:
        store.store(domain, credentials)
    print("Login Succeeded")
    return 0


def cmd_logout(args: argparse.Namespace, ctx: Context) -> int:
    from runtime.registry.auth import CredentialStore
    from runtime.registry.endpoints import server_domain

    domain = server_domain(args.server)
    if CredentialStore(ctx.config_dir).erase(domain):
        print(f"Removing login credentials for {domain}")
    else:
        print(f"Not logged in to {domain}")
    return 0


def cmd_push(args: argparse.Namespace, ctx: Context) -> int:
    from runtime.registry.errors import RegistryError
    from runtime.registry.push import push

    try:
        push(ctx, args.name, out=sys.stdout, quiet=args.quiet)
    except RegistryError as exc:
        print(f"refrt: {exc}", file=sys.stderr)
        return REGISTRY_FAILURE
    return 0


def cmd_pull(args: argparse.Namespace, ctx: Context) -> int:
    from runtime.registry.errors import RegistryError
    from runtime.registry.pull import pull
    from runtime.store.errors import StoreError

    ref = parse_reference(args.name)
    try:
        pull(ctx, args.name, out=None if args.quiet else sys.stdout, platform=args.platform)
    except (RegistryError, StoreError) as exc:  # a registry that served a bad image: exit 1 as docker pull
        print(f"refrt: {exc}", file=sys.stderr)
        return REGISTRY_FAILURE
    if args.quiet:
        print(str(ref))
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("login", help="log in to a registry")
    p.add_argument("-u", "--username")
    p.add_argument("-p", "--password")
    p.add_argument("--password-stdin", action="store_true", help="take the password from stdin")
    p.add_argument("server", nargs="?", metavar="SERVER")
    p.set_defaults(func=cmd_login)

    p = sub.add_parser("logout", help="log out from a registry")
    p.add_argument("server", nargs="?", metavar="SERVER")
    p.set_defaults(func=cmd_logout)

    p = sub.add_parser("push", help="upload an image to a registry")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the pushed digest line")
    p.add_argument("name", metavar="NAME[:TAG]")
    p.set_defaults(func=cmd_push)

    p = sub.add_parser("pull", help="download an image from a registry")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the image reference")
    p.add_argument("--platform", help="os/arch[/variant] to pick from a multi-platform image")
    p.add_argument("name", metavar="NAME[:TAG|@DIGEST]")
    p.set_defaults(func=cmd_pull)
