"""Packet filtering and NAT for refrt networks, with iptables (the nf_tables or the legacy backend).

Every refrt root owns dedicated chains named after its root tag ``<t>`` (see ``store.root_tag``)::

    nat     RF<t>-DNAT   published ports   <- PREROUTING and OUTPUT, for destinations of type LOCAL
    nat     RF<t>-POST   masquerade        <- POSTROUTING
    filter  RF<t>-FWD    forwarding policy <- FORWARD (inserted first, so a host's DROP policy does not bite)
    filter  RF<t>-ISO    network isolation (jumped to from RF<t>-FWD)

and every rule carries ``-m comment --comment refrt:<t>[:net:<id12>|:ctr:<id12>]``. Rules are removed by that
tag (``delete_tagged``), so two roots - two concurrent tests - never remove each other's rules, a crashed run's
leftovers are found by the tag, and the chains go away with the root's last bridge.

Published ports are reached from the host through DNAT in OUTPUT as well as PREROUTING; ``127.0.0.1`` works
because the bridge has ``route_localnet`` and ``RF<t>-POST`` masquerades loopback sources leaving through it
(the kernel path, no userland proxy). ``ip_forward`` is switched on while any refrt root has a bridge and put
back to its former value when the last one goes (host-wide bookkeeping under ``/run/refrt-net``).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from runtime.network import bridge, commands
from runtime.network.errors import NetworkError

HOST_STATE = Path("/run/refrt-net")
BUILTIN_JUMPS = (("nat", "PREROUTING", "DNAT"), ("nat", "OUTPUT", "DNAT"), ("nat", "POSTROUTING", "POST"),
                 ("filter", "FORWARD", "FWD"))


@dataclass(frozen=True)
class Rule:
    table: str
    chain: str
    args: tuple[str, ...]
    comment: str
    insert: bool = False

    def spec(self) -> list[str]:
        """The rule's arguments with the comment match placed before the target (``-j``)."""
        cut = self.args.index("-j") if "-j" in self.args else len(self.args)
        return [*self.args[:cut], "-m", "comment", "--comment", self.comment, *self.args[cut:]]


@cache
def tool() -> str:
    """The iptables binary that works on this host: ``iptables`` (nf_tables on Debian 12) else the legacy one."""
    for candidate in ("iptables", "iptables-legacy"):
        if commands.succeeds([candidate, "-w", "-t", "nat", "-S", "POSTROUTING"]):
            return candidate
    raise NetworkError("neither iptables nor iptables-legacy works here (need the nat table)")


def ipt(*args: str, check: bool = True) -> str:
    return commands.run([tool(), "-w", *args], check=check)


def chain(tag: str, suffix: str) -> str:
    return f"RF{tag}-{suffix}"


def tag_comment(tag: str, kind: str = "", ident: str = "") -> str:
    return f"refrt:{tag}" + (f":{kind}:{ident[:12]}" if kind else "")


def _chain_exists(table: str, name: str) -> bool:
    return commands.succeeds([tool(), "-w", "-t", table, "-S", name])


def _has_rule(rule: Rule) -> bool:
    return commands.succeeds([tool(), "-w", "-t", rule.table, "-C", rule.chain, *rule.spec()])


def add(rule: Rule) -> None:
    """Add ``rule`` unless an identical one is there (so re-running a setup never duplicates)."""
    if _has_rule(rule):
        return
    verb = ["-I", rule.chain, "1"] if rule.insert else ["-A", rule.chain]
    ipt("-t", rule.table, *verb, *rule.spec())


def ensure_base(tag: str) -> None:
    """Create this root's chains and the jumps into them; switch ``ip_forward`` on."""
    for table, suffix in (("nat", "DNAT"), ("nat", "POST"), ("filter", "FWD"), ("filter", "ISO")):
        if not _chain_exists(table, chain(tag, suffix)):
            ipt("-t", table, "-N", chain(tag, suffix))
    comment = tag_comment(tag)
    for table, builtin, suffix in BUILTIN_JUMPS:
        match = ("-m", "addrtype", "--dst-type", "LOCAL") if suffix == "DNAT" else ()
        add(Rule(table, builtin, (*match, "-j", chain(tag, suffix)), comment, insert=(table == "filter")))
    enable_forwarding(tag)


def remove_base(tag: str) -> None:
    """Remove every rule tagged for this root, then its chains; restore ``ip_forward`` if last user."""
    delete_tagged(tag_comment(tag), prefix=True)
    for table, suffix in (("nat", "DNAT"), ("nat", "POST"), ("filter", "FWD"), ("filter", "ISO")):
        name = chain(tag, suffix)
        if _chain_exists(table, name):
            ipt("-t", table, "-F", name, check=False)
            ipt("-t", table, "-X", name, check=False)
    disable_forwarding(tag)


def rules_tagged(comment: str, *, prefix: bool = False) -> list[tuple[str, list[str]]]:
    """``(table, ["-A", chain, ...])`` of every rule whose comment is ``comment`` (or starts with it)."""
    found = []
    for table in ("nat", "filter"):
        for line in ipt("-t", table, "-S").splitlines():
            if "--comment" not in line:
                continue
            words = shlex.split(line)
            value = words[words.index("--comment") + 1]
            if value == comment or (prefix and value.startswith(comment + ":")):
                found.append((table, words))
    return found


def delete_tagged(comment: str, *, prefix: bool = False) -> int:
    """Delete every rule with that comment (and, with ``prefix``, every sub-tag). Returns how many."""
    count = 0
    for table, words in rules_tagged(comment, prefix=prefix):
        if words and words[0] == "-A":
            ipt("-t", table, "-D", *words[1:], check=False)
            count += 1
    return count


def network_rules(tag: str, net_id: str, bridge_name: str, subnet: str, internal: bool) -> list[Rule]:
    """Forwarding, isolation and masquerade for one network's bridge."""
    c = tag_comment(tag, "net", net_id)
    fwd, iso = chain(tag, "FWD"), chain(tag, "ISO")
    rules = [Rule("filter", fwd, ("-i", bridge_name, "-o", bridge_name, "-j", "ACCEPT"), c)]
    if internal:
        rules += [
            Rule("filter", fwd, ("-i", bridge_name, "!", "-o", bridge_name, "-j", "DROP"), c),
            Rule("filter", fwd, ("!", "-i", bridge_name, "-o", bridge_name, "-j", "DROP"), c),
        ]
    else:
        rules += [
            Rule("filter", fwd, ("-o", bridge_name, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED",
                                 "-j", "ACCEPT"), c),
            Rule("filter", fwd, ("-i", bridge_name, "!", "-o", bridge_name, "-j", iso), c),
            Rule("filter", fwd, ("-i", bridge_name, "!", "-o", bridge_name, "-j", "ACCEPT"), c),
            Rule("filter", iso, ("-o", bridge_name, "-j", "DROP"), c),
            Rule("nat", chain(tag, "POST"), ("-s", subnet, "!", "-o", bridge_name, "-j", "MASQUERADE"), c),
        ]
    rules.append(Rule("nat", chain(tag, "POST"), ("-s", "127.0.0.0/8", "-o", bridge_name, "-j", "MASQUERADE"), c))
    return rules


def port_rules(tag: str, container_id: str, bridge_name: str, host_ip: str, host_port: int, proto: str,
               ip: str, container_port: int) -> list[Rule]:
    """DNAT of ``host_ip:host_port`` to the container, and the forward rule that lets outside traffic in."""
    c = tag_comment(tag, "ctr", container_id)
    dst = ("-d", host_ip) if host_ip not in ("", "0.0.0.0") else ()
    return [
        Rule("nat", chain(tag, "DNAT"), (*dst, "-p", proto, "-m", proto, "--dport", str(host_port),
                                         "-j", "DNAT", "--to-destination", f"{ip}:{container_port}"), c),
        Rule("filter", chain(tag, "FWD"), ("-d", f"{ip}/32", "-o", bridge_name, "-p", proto, "-m", proto,
                                           "--dport", str(container_port), "-j", "ACCEPT"), c),
    ]


def add_all(rules: list[Rule]) -> None:
    for rule in rules:
        add(rule)


def published_host_ports() -> set[tuple[str, str, int]]:
    """``(proto, host_ip, port)`` of every port any refrt root publishes on this host (host-wide check)."""
    out: set[tuple[str, str, int]] = set()
    for line in ipt("-t", "nat", "-S").splitlines():
        if "refrt:" not in line or "DNAT" not in line or "--dport" not in line:
            continue
        words = shlex.split(line)
        proto = words[words.index("-p") + 1] if "-p" in words else "tcp"
        host_ip = words[words.index("-d") + 1].split("/")[0] if "-d" in words else "0.0.0.0"
        out.add((proto, host_ip, int(words[words.index("--dport") + 1])))
    return out


def enable_forwarding(tag: str) -> None:
    """Turn ``ip_forward`` on, remembering the value found before the first refrt root needed it."""
    users = HOST_STATE / "forward-users"
    users.mkdir(parents=True, exist_ok=True)
    original = HOST_STATE / "ip_forward.orig"
    old = bridge.set_sysctl("net/ipv4/ip_forward", "1")
    if not original.exists() and not any(users.iterdir()):
        original.write_text(old)
    (users / tag).touch()


def disable_forwarding(tag: str) -> None:
    """Forget this root; the last root gone puts ``ip_forward`` back as it was."""
    users = HOST_STATE / "forward-users"
    (users / tag).unlink(missing_ok=True)
    original = HOST_STATE / "ip_forward.orig"
    if users.is_dir() and not any(users.iterdir()) and original.exists():
        bridge.set_sysctl("net/ipv4/ip_forward", original.read_text().strip() or "0")
        original.unlink()


def leftovers(tag: str) -> list[str]:
    """Rules and chains of this root still installed (empty after a clean teardown; tests assert it)."""
    found = [" ".join(w) for _, w in rules_tagged(tag_comment(tag), prefix=True)]
    for table, suffix in (("nat", "DNAT"), ("nat", "POST"), ("filter", "FWD"), ("filter", "ISO")):
        if _chain_exists(table, chain(tag, suffix)):
            found.append(f"chain {table}/{chain(tag, suffix)}")
    return found
