"""The ``ssh://`` target, and the one SSH connection every remote backend (ssh, qemu, vagrant) runs through.

``ssh://user@host[:port][?key=PATH&sudo=true|false&host_key=accept|strict&destroy=...]`` names an existing
host; it is never destroyed (``destroy`` is accepted and ignored, so one option set fits every backend).

Why one connection: a suite runs hundreds of short commands; a new SSH handshake each time would cost more than
most of them (more so inside a TCG guest, where the guest's crypto is emulated). :class:`SshSession` keeps one
paramiko client, opens a channel per command, feeds stdin through it, enforces the timeout by killing the
remote process tree, and reconnects on the next command after the connection dropped. While a VM's sshd comes up
user-mode networking already accepts TCP, so connecting retries "Error reading SSH protocol banner" until a
deadline.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import select
import shlex
import socket
import tarfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paramiko

from conformance.errors import CommandTimeout, TargetError
from conformance.targets.agent import AgentGone, CommandAgent
from conformance.targets.base import CommandResult, Target, TargetSpec, register_target, seconds

log = logging.getLogger(__name__)
# While a VM's sshd comes up, paramiko's transport thread logs each refused banner with a traceback; without a
# handler of its own those records reach stderr through logging's last resort. Applications that configure
# logging still get them.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

#: Errors that mean "the SSH transport is not (or no longer) usable".
_TRANSPORT_ERRORS = (paramiko.SSHException, OSError, EOFError, socket.timeout)

DESTROY_POLICIES = ("always", "passing", "never")


class _AcceptPolicy(paramiko.MissingHostKeyPolicy):
    """Accept unknown host keys without writing them anywhere: disposable VMs have new keys every build."""

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        log.debug("accepting %s host key of %s", key.get_name(), hostname)


class SshSession:
    """One reusable SSH connection to ``user@host:port``, as root or through ``sudo -n``."""

    def __init__(
        self,
        host: str,
        port: int = 22,
        user: str = "root",
        *,
        key: Path | None = None,
        sudo: bool | None = None,
        strict_host_key: bool = False,
        connect_timeout: float = 60.0,
    ) -> None:
        self.host = host
        self.port = port
        self.user = user
        self.key = key
        self.sudo = (user != "root") if sudo is None else sudo
        self.strict_host_key = strict_host_key
        self.connect_timeout = connect_timeout
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._lock = threading.Lock()
        #: Run commands through one long-lived process on the target (:mod:`conformance.targets.agent`) instead
        #: of a channel each; needs python3 there, and falls back to channels when the agent cannot start.
        self.use_agent = False
        self._agent: CommandAgent | None = None
        self._agent_lock = threading.Lock()

    @property
    def address(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"

    # --- connection ---------------------------------------------------------------------------------------

    def connect(self, timeout: float | None = None, check: Callable[[], None] | None = None) -> None:
        """Connect, retrying refused connections and missing banners until ``timeout`` seconds have passed.

        ``check`` is called between attempts and may raise to give up early (a VM whose qemu exited).
        """
        self.close()
        deadline = time.monotonic() + (self.connect_timeout if timeout is None else timeout)
        last: BaseException | None = None
        while True:
            client = paramiko.SSHClient()
            if self.strict_host_key:
                client.load_system_host_keys()
                client.set_missing_host_key_policy(paramiko.RejectPolicy())
            else:
                client.set_missing_host_key_policy(_AcceptPolicy())
            remaining = deadline - time.monotonic()
            try:
                client.connect(
                    self.host,
                    port=self.port,
                    username=self.user,
                    key_filename=str(self.key) if self.key else None,
                    timeout=max(1.0, min(10.0, remaining)),
                    banner_timeout=max(1.0, min(15.0, remaining)),
                    auth_timeout=max(1.0, min(15.0, remaining)),
                    allow_agent=False,
                    look_for_keys=self.key is None,
                )
            except paramiko.AuthenticationException as exc:
                client.close()
                raise TargetError(f"SSH authentication to {self.address} failed: {exc}") from exc
            except _TRANSPORT_ERRORS as exc:
                client.close()
                last = exc
                if check is not None:
                    check()
                if time.monotonic() + 0.5 >= deadline:
                    waited = self.connect_timeout if timeout is None else timeout
                    raise TargetError(
                        f"SSH to {self.address} not reachable within {waited:.0f} s: {type(last).__name__}: {last}"
                    ) from last
                time.sleep(0.5)
                continue
            transport = client.get_transport()
            if transport is not None:
                transport.set_keepalive(15)
            self._client = client
            return

    def close(self) -> None:
        """Drop the connection (the next command reconnects)."""
        if self._agent is not None:
            self._agent.close()
            self._agent = None
        if self._sftp is not None:
            with contextlib.suppress(*_TRANSPORT_ERRORS):
                self._sftp.close()
            self._sftp = None
        if self._client is not None:
            self._client.close()
            self._client = None

    def client(self) -> paramiko.SSHClient:
        """The live client, reconnecting first when the previous connection dropped."""
        with self._lock:
            transport = self._client.get_transport() if self._client is not None else None
            if self._client is None or transport is None or not transport.is_active():
                self.connect()
            assert self._client is not None
            return self._client

    def _transport(self) -> paramiko.Transport:
        transport = self.client().get_transport()
        if transport is None:
            raise TargetError(f"SSH connection to {self.address} has no transport")
        return transport

    # --- commands -----------------------------------------------------------------------------------------

    def _wrap(self, command: str) -> str:
        """Run ``command`` in a process group of its own whose leader prints its pid first (so a timed-out
        command's whole group and tree can be killed).

        ``setsid -w`` (util-linux) makes the group; where it is missing, sshd's own session is the group. The
        leader is one ``/bin/sh`` that ``eval``s the command and then ``exit $?``: the shell stays the parent of
        the command's last process (dash would otherwise exec it), so a command killed by a signal reports 128+N
        as shells do, and a missing exit status means the connection or the session itself died.
        """
        script = "'echo $$; eval \"$1\"; exit $?' sh " + shlex.quote(command)
        inner = (f"if command -v setsid >/dev/null 2>&1; then exec setsid -w /bin/sh -c {script}; "
                 f"else exec /bin/sh -c {script}; fi")
        if self.sudo:
            return f"sudo -n /bin/sh -c {shlex.quote(inner)}"
        return inner

    def run(self, command: str, *, timeout: float | None = None, stdin: str | bytes | None = None) -> CommandResult:
        """Run ``command`` through ``/bin/sh -c``; a non-zero exit status is a result, not an error."""
        agent = self._command_agent() if self.use_agent else None
        if agent is not None:
            result = self._run_by_agent(agent, command, timeout, stdin)
            if result is not None:
                return result
        start = time.monotonic()
        try:
            channel = self._transport().open_session(timeout=30)
            channel.exec_command(self._wrap(command))
        except _TRANSPORT_ERRORS as exc:
            self.close()
            raise TargetError(f"SSH to {self.address}: cannot start {command!r}: {exc}") from exc
        try:
            status, out, err = self._collect(channel, command, start, timeout, stdin)
        finally:
            channel.close()
        _pid, _, stdout = out.partition(b"\n")
        return CommandResult(
            command=command,
            exit_status=status,
            stdout=stdout.decode(errors="surrogateescape"),
            stderr=err.decode(errors="surrogateescape"),
            duration=time.monotonic() - start,
        )

    def _command_agent(self) -> CommandAgent | None:
        """The live command agent, started (again) on this connection when needed; None when it cannot run."""
        with self._agent_lock:
            if self._agent is not None and self._agent.alive:
                return self._agent
            if self._agent is not None:
                self._agent.close()
                self._agent = None
            try:
                self._agent = CommandAgent(self._transport(), self.address)
            except _TRANSPORT_ERRORS as exc:
                log.info("no command agent on %s (%s): a channel per command", self.address, exc)
                self.use_agent = False
                return None
            return self._agent

    def _run_by_agent(self, agent: CommandAgent, command: str, timeout: float | None,
                      stdin: str | bytes | None) -> CommandResult | None:
        """``run`` through the agent; None when the agent died before it started the command (the caller then
        uses a channel, and the agent is given up if it never ran anything)."""
        start = time.monotonic()
        data = stdin.encode() if isinstance(stdin, str) else (stdin or b"")
        pending = None
        try:
            ident, pending = agent.submit(command, data)
            finished = agent.wait(ident, pending, None if timeout is None else start + timeout)
        except AgentGone as exc:
            if pending is None or not pending.pid:
                if agent.completed == 0:
                    log.info("command agent on %s did not work (%s): a channel per command", self.address, exc)
                    self.use_agent = False
                return None
            raise TargetError(f"SSH connection to {self.address} dropped while running {command!r}",
                              evidence=(bytes(pending.out) + bytes(pending.err)).decode(errors="replace")[-2000:]
                              ) from exc
        if not finished:
            agent.forget(ident)
            killed = self._kill_tree(pending.pid)
            raise CommandTimeout(
                f"timed out after {seconds(timeout or 0)} s on {self.address}; killed {killed}",
                evidence=(bytes(pending.out) + bytes(pending.err)).decode(errors="replace")[-2000:],
                killed=killed,
            )
        assert pending.exit is not None
        return CommandResult(command=command, exit_status=pending.exit,
                             stdout=bytes(pending.out).decode(errors="surrogateescape"),
                             stderr=bytes(pending.err).decode(errors="surrogateescape"),
                             duration=time.monotonic() - start)

    def _collect(
        self,
        channel: paramiko.Channel,
        command: str,
        start: float,
        timeout: float | None,
        stdin: str | bytes | None,
    ) -> tuple[int, bytes, bytes]:
        pending = stdin.encode() if isinstance(stdin, str) else (stdin or b"")
        if not pending:
            channel.shutdown_write()
        out = bytearray()
        err = bytearray()
        deadline = None if timeout is None else start + timeout
        exited_at: float | None = None
        try:
            while True:
                if pending and channel.send_ready():
                    sent = channel.send(pending[:32768])
                    pending = pending[sent:]
                    if not pending:
                        channel.shutdown_write()
                while channel.recv_ready():
                    out += channel.recv(65536)
                while channel.recv_stderr_ready():
                    err += channel.recv_stderr(65536)
                if channel.exit_status_ready() and exited_at is None:
                    exited_at = time.monotonic()
                # A background process that kept the command's stdout open would hold EOF back for ever:
                # once the exit status is in, wait only briefly for the rest of the output.
                if exited_at is not None and (channel.eof_received or time.monotonic() - exited_at > 2.0):
                    while channel.recv_ready():
                        out += channel.recv(65536)
                    while channel.recv_stderr_ready():
                        err += channel.recv_stderr(65536)
                    if channel.exit_status != -1:  # -1: closed without an exit status (see below)
                        return channel.recv_exit_status(), bytes(out), bytes(err)
                transport = channel.get_transport()
                if channel.closed or transport is None or not transport.is_active():
                    if channel.exit_status_ready() and channel.exit_status != -1:
                        return channel.recv_exit_status(), bytes(out), bytes(err)
                    self.close()
                    raise TargetError(
                        f"SSH connection to {self.address} dropped while running {command!r}",
                        evidence=(bytes(out) + bytes(err)).decode(errors="replace")[-2000:],
                    )
                if deadline is not None and time.monotonic() >= deadline:
                    # Stop reading here: whatever still holds the channel open is killed, not waited for.
                    killed = self._kill_tree(bytes(out).partition(b"\n")[0].strip().decode(errors="replace"))
                    raise CommandTimeout(
                        f"timed out after {seconds(timeout or 0)} s on {self.address}; killed {killed}",
                        evidence=(bytes(out).partition(b"\n")[2] + bytes(err)).decode(errors="replace")[-2000:],
                        killed=killed,
                    )
                wait = 0.2 if deadline is None else max(0.0, min(0.2, deadline - time.monotonic()))
                select.select([channel], [], [], wait)
        except _TRANSPORT_ERRORS as exc:
            self.close()
            raise TargetError(f"SSH connection to {self.address} failed while running {command!r}: {exc}") from exc

    def _kill_tree(self, pid: str) -> str:
        """Stop, then kill, a timed-out command's process group and tree (``pid`` leads the group).

        Returns what was killed, for the verdict's message.
        """
        if not pid.isdigit():
            return "nothing: the command had not started yet (its channel was closed)"
        script = (
            "tree() { echo $1; for c in $(pgrep -P $1); do tree $c; done; }; "
            f"pids=$(tree {pid}); kill -STOP $pids 2>/dev/null; "
            f"kill -KILL -{pid} 2>/dev/null; kill -KILL $pids 2>/dev/null; true"  # dash: no "--"
        )
        try:
            self.run(script, timeout=30)
        except TargetError as exc:
            log.warning("could not kill timed-out command %s on %s: %s", pid, self.address, exc)
            return f"nothing: killing process group {pid} failed ({exc})"
        return f"process group {pid}"

    # --- files --------------------------------------------------------------------------------------------

    def sftp(self) -> paramiko.SFTPClient:
        client = self.client()
        if self._sftp is None or self._sftp.get_channel() is None or self._sftp.get_channel().closed:  # type: ignore[union-attr]
            self._sftp = client.open_sftp()
        return self._sftp

    def _checked(self, command: str, timeout: float = 300) -> None:
        result = self.run(command, timeout=timeout)
        if result.exit_status != 0:
            raise TargetError(f"on {self.address}: {command!r} failed ({result.exit_status}): {result.stderr.strip()}")

    def put(self, local: Path, remote: str) -> None:
        """Copy a file or a tree (as one tar.gz over SFTP, unpacked remotely; ``__pycache__`` left out)."""
        local = Path(local)
        if not local.exists():
            raise TargetError(f"cannot copy {local} to {self.address}: no such file or directory")
        staging = f"/tmp/.conformance-put-{uuid.uuid4().hex}"
        try:
            if local.is_dir():
                self.sftp().putfo(io.BytesIO(_tar_tree(local)), staging)
                quoted = shlex.quote(remote)
                self._checked(
                    f"mkdir -p {quoted} && tar -xzf {staging} -C {quoted} --no-same-owner; "
                    f"s=$?; rm -f {staging}; exit $s"
                )
            else:
                mode = local.stat().st_mode & 0o7777
                self.sftp().put(str(local), staging)
                self._checked(f"install -D -m {mode:o} {staging} {shlex.quote(remote)}; s=$?; rm -f {staging}; exit $s")
        except _TRANSPORT_ERRORS as exc:
            self.close()
            raise TargetError(f"copying {local} to {self.address}:{remote} failed: {exc}") from exc


def _tar_tree(directory: Path) -> bytes:
    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        name = info.name.rsplit("/", 1)[-1]
        if name == "__pycache__" or name.endswith(".pyc"):
            return None
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as tar:
        for entry in sorted(os.listdir(directory)):
            tar.add(directory / entry, arcname=entry, filter=keep)
    return buffer.getvalue()


def testinfra_host(session: SshSession) -> Any:
    """A testinfra ``Host`` whose commands go over ``session``'s own connection (no second handshake)."""
    from testinfra.backend.paramiko import ParamikoBackend
    from testinfra.host import Host

    class _SharedParamikoBackend(ParamikoBackend):  # type: ignore[misc]
        @property
        def client(self) -> paramiko.SSHClient:
            return session.client()

    backend = _SharedParamikoBackend(
        f"paramiko://{session.user}@{session.host}:{session.port}", sudo=session.sudo and session.user != "root"
    )
    host = Host(backend)
    backend.set_host(host)
    return host


def parse_destroy(options: dict[str, str], default: str = "always") -> str:
    """Validate a ``destroy`` option: ``always`` (default), ``passing`` (keep failed runs' VMs), ``never``."""
    value = options.get("destroy", default)
    if value not in DESTROY_POLICIES:
        raise TargetError(f"destroy={value!r}: expected one of {', '.join(DESTROY_POLICIES)}")
    return value


def _bool_option(options: dict[str, str], name: str) -> bool | None:
    if name not in options:
        return None
    value = options[name].lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise TargetError(f"{name}={options[name]!r}: expected true or false")


class RemoteTarget(Target):
    """A target reached through one :class:`SshSession` (``self.session``, set by ``up()``)."""

    def __init__(self, spec: TargetSpec) -> None:
        super().__init__(spec)
        self.session: SshSession | None = None
        #: ``always`` | ``passing`` | ``never``; the run command may set it (``--destroy``) before ``down()``.
        self.destroy = parse_destroy(spec.options)
        #: May be set by the run command before ``down()`` when ``destroy == "passing"``: did every check pass?
        self.run_passed: bool | None = None

    def _session(self) -> SshSession:
        if self.session is None:
            self.up()
        if self.session is None:
            raise TargetError(f"target {self.name} is not up")
        return self.session

    def run(self, command: str, *, timeout: float | None = None, stdin: str | None = None) -> CommandResult:
        return self._session().run(command, timeout=timeout, stdin=stdin)

    def put(self, local: Path, remote: str) -> None:
        self._session().put(local, remote)

    @property
    def host(self) -> Any:
        return testinfra_host(self._session())

    @property
    def destroy_policy(self) -> str:
        """Alias of :attr:`destroy` (the name the run session sets)."""
        return self.destroy

    @destroy_policy.setter
    def destroy_policy(self, value: str) -> None:
        self.destroy = parse_destroy({"destroy": value})

    def should_destroy(self, *, at_exit: bool = False) -> bool:
        """Apply the destroy policy to a ``down()``.

        ``always`` destroys; ``never`` keeps; ``passing`` destroys unless :attr:`run_passed` is False. At
        interpreter exit (a run that never called ``down()``, as the run session does when it keeps a failed
        run's VM) only ``always`` destroys.
        """
        if self.destroy == "always":
            return True
        if self.destroy == "never" or at_exit:
            return False
        return self.run_passed is not False


@register_target
class SshTarget(RemoteTarget):
    """An existing host reached over SSH; ``down()`` only disconnects."""

    scheme = "ssh"
    disposable = False

    def __init__(self, spec: TargetSpec) -> None:
        super().__init__(spec)
        if not spec.host:
            raise TargetError(f"{spec.raw}: an ssh target needs a host (ssh://user@host[:port])")
        key = spec.options.get("key")
        host_key = spec.options.get("host_key", "accept")
        if host_key not in ("accept", "strict"):
            raise TargetError(f"host_key={host_key!r}: expected accept or strict")
        self.session_args: dict[str, Any] = {
            "host": spec.host,
            "port": spec.port or 22,
            "user": spec.user or "root",
            "key": Path(key).expanduser() if key else None,
            "sudo": _bool_option(spec.options, "sudo"),
            "strict_host_key": host_key == "strict",
            "connect_timeout": float(spec.options.get("timeout", "60")),
        }

    @property
    def name(self) -> str:
        return f"ssh-{self.spec.host}"

    def up(self) -> None:
        if self.session is None:
            session = SshSession(**self.session_args)
            session.connect()
            self.session = session

    def down(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None
