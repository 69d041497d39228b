"""Packet filtering and NAT for refrt networks, with iptables (the nf_tables or the legacy backend).

Every refrt root owns dedicated chains named after its root tag ``<t>`` (see ``store.root_tag``)::

    nat     RF<t>-DNAT   published ports   <- PREROUTING and OUTPUT, for destinations of type LOCAL
    nat     RF<t>-POST   masquerade        <- POSTROUTING
    filter  RF<t>-FWD    forwarding policy <- FORWARD (inserted first, so a host's DROP policy does not bite)
    filter  RF<t>-ISO    network isolation (jumped to from RF<t>-FWD)
    filter  RF<t>-IN     host loopback guard  <- INPUT (inserted first)

and every rule carries ``-m comment --comment refrt:<t>[:net:<id12>|:ctr:<id12>]``. Rules are removed by that
tag (``delete_tagged``), so two roots - two concurrent tests - never remove each other's rules, a crashed run's
leftovers are found by the tag, and the chains go away with the root's last bridge.

Published ports are reached from the host through DNAT in OUTPUT as well as PREROUTING; ``127.0.0.1`` works
because the bridge has ``route_localnet`` and ``RF<t>-POST`` masquerades loopback sources leaving through it
(the kernel path, no userland proxy). ``ip_forward`` is switched on while any refrt root has a bridge and put
back to its former value when the last one goes (host-wide bookkeeping under ``/run/refrt-net``).

``route_localnet`` has a price (CVE-2020-8558): the host then accepts packets for 127.0.0.0/8 that arrive on the
bridge, so a container that crafts them (CAP_NET_RAW is in docker's default set) reaches services bound only to
the host's loopback. ``RF<t>-IN`` drops, per bridge, every packet to 127.0.0.0/8 arriving on it unless conntrack
knows it as part of a DNAT'ed or an established flow - the replies of ``-p 127.0.0.1:P:...`` connections. This
is the rule Kubernetes added for the same CVE, kept in refrt's own chain and removed with the network.
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
                 ("filter", "FORWARD", "FWD"), ("filter", "INPUT", "IN"))
TOOLS = ("iptables", "iptables-legacy")
CHAINS = (("nat", "DNAT"), ("nat", "POST"), ("filter", "FWD"), ("filter", "ISO"), ("filter", "IN"))


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

    def line(self) -> str:
        """The rule as an ``iptables-restore`` line."""
        verb = ["-I", self.chain, "1"] if self.insert else ["-A", self.chain]
        return _join([*verb, *self.spec()])


def _join(words: list[str]) -> str:
    """Words as an ``iptables-restore`` line (it knows double quotes only, and ``!`` must stay bare)."""
    return " ".join(f'"{w}"' if (not w or any(c.isspace() for c in w)) else w for w in words)


@cache
def tool() -> str:
    """The iptables binary that works on this host: ``iptables`` (nf_tables on Debian 12) else the legacy one.

    The answer is kept in ``/run/refrt-net`` (gone at reboot, as the kernel's choice can change only then): a
    probe is an iptables run, too dear to repeat in every command."""
    remembered = HOST_STATE / "iptables-tool"
    try:
        name = remembered.read_text().strip()
    except OSError:
        name = ""
    if name in TOOLS:
        return name
    for candidate in TOOLS:
        if commands.succeeds([candidate, "-w", "-t", "nat", "-S", "POSTROUTING"]):
            remembered.parent.mkdir(parents=True, exist_ok=True)
            remembered.write_text(candidate)
            return candidate
    raise NetworkError("neither iptables nor iptables-legacy works here (need the nat table)")


def ipt(*args: str, check: bool = True) -> str:
    return commands.run([tool(), "-w", *args], check=check)


def restore(script: dict[str, list[str]]) -> None:
    """Apply rule lines per table in one ``iptables-restore --noflush`` run (one atomic commit per table).

    Batching matters: one process instead of two per rule keeps ``network create`` and ``run -p`` fast on a
    loaded host, and a table's lines land all or none."""
    text = "".join(f"*{table}\n" + "".join(f"{line}\n" for line in lines) + "COMMIT\n"
                   for table, lines in script.items() if lines)
    if text:
        commands.run([f"{tool()}-restore", "-w", "-n"], input_text=text)


def chain(tag: str, suffix: str) -> str:
    return f"RF{tag}-{suffix}"


def tag_comment(tag: str, kind: str = "", ident: str = "") -> str:
    return f"refrt:{tag}" + (f":{kind}:{ident[:12]}" if kind else "")


def dump(table: str) -> list[list[str]]:
    """The table's rules and chains as ``iptables -S`` prints them, split into words."""
    return [shlex.split(line) for line in ipt("-t", table, "-S").splitlines() if line.strip()]


def _comment_of(words: list[str]) -> str:
    return words[words.index("--comment") + 1] if "--comment" in words else ""


def _jump_rules(tag: str) -> list[Rule]:
    """The jumps from the built-in chains into this root's chains."""
    local = ("-m", "addrtype", "--dst-type", "LOCAL")
    return [Rule(t, builtin, local * (suffix == "DNAT") + ("-j", chain(tag, suffix)), tag_comment(tag),
                 insert=(t == "filter")) for t, builtin, suffix in BUILTIN_JUMPS]


def _iso_return(tag: str) -> Rule:
    # replies of connections already accepted (a published port reached from another network) must not be
    # dropped by the isolation rules of the network they come from
    return Rule("filter", chain(tag, "ISO"), ("-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "RETURN"),
                tag_comment(tag), insert=True)


def ensure_base(tag: str) -> None:
    """Create this root's chains and the jumps into them (only what is missing, found by dumping the tables);
    switch ``ip_forward`` on. The careful path: :func:`apply_root` falls back to it."""
    script: dict[str, list[str]] = {"nat": [], "filter": []}
    comment = tag_comment(tag)
    for table in script:
        words = dump(table)
        chains = {w[1] for w in words if w[:1] == ["-N"]}
        jumps = {(w[1], w[-1]) for w in words if w[:1] == ["-A"] and _comment_of(w) == comment}
        for t, suffix in CHAINS:
            if t == table and chain(tag, suffix) not in chains:
                script[table].append(f":{chain(tag, suffix)} - [0:0]")
        for rule in _jump_rules(tag):
            if rule.table == table and (rule.chain, rule.args[-1]) not in jumps:
                script[table].append(rule.line())
    restore(script)
    enable_forwarding(tag)


def apply_root(tag: str, rules: list[Rule], *, with_base: bool) -> None:
    """Make this root's chains hold exactly ``rules`` (its networks' and published ports'), in one
    ``iptables-restore``: declaring a chain creates it or empties it, so nothing is dumped or compared.

    ``with_base``: the root has no bridge yet, so its chains and jumps are taken as absent and the jumps are
    added too. Should that assumption be wrong or the restore fail for another reason, the careful path runs:
    the tables are dumped, missing chains and jumps added, and the chains' content applied again. Rules marked
    ``insert`` come first in their chain."""
    script = _chains_script(tag, rules)
    if with_base:
        for rule in _jump_rules(tag):
            script[rule.table].append(rule.line())
    try:
        restore(script)
    except NetworkError:
        ensure_base(tag)
        restore(_chains_script(tag, rules))
        return
    if with_base:
        enable_forwarding(tag)


def _chains_script(tag: str, rules: list[Rule]) -> dict[str, list[str]]:
    script: dict[str, list[str]] = {"nat": [], "filter": []}
    for t, suffix in CHAINS:
        script[t].append(f":{chain(tag, suffix)} - [0:0]")
    ordered = [_iso_return(tag), *rules]
    for rule in [r for r in ordered if r.insert] + [r for r in ordered if not r.insert]:
        script[rule.table].append(_join(["-A", rule.chain, *rule.spec()]))
    return script


def remove_root(tag: str) -> None:
    """Remove this root's jumps and chains (with every rule in them) in one ``iptables-restore``; if that fails
    (a jump missing or doubled after a crash), the careful :func:`remove_base`."""
    script: dict[str, list[str]] = {"nat": [], "filter": []}
    for rule in _jump_rules(tag):
        script[rule.table].append(_join(["-D", rule.chain, *rule.spec()]))
    for t, suffix in CHAINS:
        script[t].append(f"-F {chain(tag, suffix)}")
    for t, suffix in CHAINS:
        script[t].append(f"-X {chain(tag, suffix)}")
    try:
        restore(script)
    except NetworkError:
        remove_base(tag)
        return
    disable_forwarding(tag)


def remove_base(tag: str) -> None:
    """Remove every rule tagged for this root, then its chains; restore ``ip_forward`` if last user."""
    delete_tagged(tag_comment(tag), prefix=True)
    script: dict[str, list[str]] = {"nat": [], "filter": []}
    for table in script:
        chains = {w[1] for w in dump(table) if w[:1] == ["-N"]}
        for t, suffix in CHAINS:
            if t == table and chain(tag, suffix) in chains:
                script[table] += [f"-F {chain(tag, suffix)}", f"-X {chain(tag, suffix)}"]
    restore(script)
    disable_forwarding(tag)


def rules_tagged(comment: str, *, prefix: bool = False) -> list[tuple[str, list[str]]]:
    """``(table, ["-A", chain, ...])`` of every rule whose comment is ``comment`` (or starts with it)."""
    found = []
    for table in ("nat", "filter"):
        for words in dump(table):
            value = _comment_of(words)
            if value and (value == comment or (prefix and value.startswith(comment + ":"))):
                found.append((table, words))
    return found


def delete_tagged(comment: str, *, prefix: bool = False) -> int:
    """Delete every rule with that comment (and, with ``prefix``, every sub-tag) in one batch. Returns how many."""
    script: dict[str, list[str]] = {"nat": [], "filter": []}
    for table, words in rules_tagged(comment, prefix=prefix):
        if words[:1] == ["-A"]:
            script[table].append(_join(["-D", *words[1:]]))
    restore(script)
    return sum(len(v) for v in script.values())


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
    # CVE-2020-8558: the host's loopback is not reachable from the bridge, except replies of DNAT'ed flows
    rules.append(Rule("filter", chain(tag, "IN"), ("-i", bridge_name, "-d", "127.0.0.0/8", "-m", "conntrack", "!",
                                                   "--ctstate", "RELATED,ESTABLISHED,DNAT", "-j", "DROP"), c))
    # a container reaching a published port of its own network through the host: without this the reply would
    # go straight back over the bridge with the wrong source address
    rules.append(Rule("nat", chain(tag, "POST"), ("-s", subnet, "-o", bridge_name, "-m", "conntrack", "--ctstate",
                                                  "DNAT", "-j", "MASQUERADE"), c))
    return rules


def port_rules(tag: str, container_id: str, bridge_name: str, host_ip: str, host_port: int, proto: str,
               ip: str, container_port: int) -> list[Rule]:
    """DNAT of ``host_ip:host_port`` to the container, and the forward rule that lets outside traffic in -
    first in the chain, so clients on other refrt networks reach published ports too, as through docker's proxy."""
    c = tag_comment(tag, "ctr", container_id)
    dst = ("-d", host_ip) if host_ip not in ("", "0.0.0.0") else ()
    return [
        Rule("nat", chain(tag, "DNAT"), (*dst, "-p", proto, "-m", proto, "--dport", str(host_port),
                                         "-j", "DNAT", "--to-destination", f"{ip}:{container_port}"), c),
        Rule("filter", chain(tag, "FWD"), ("-d", f"{ip}/32", "-o", bridge_name, "-p", proto, "-m", proto,
                                           "--dport", str(container_port), "-j", "ACCEPT"), c, insert=True),
    ]


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
    for table in ("nat", "filter"):
        found += [f"chain {table}/{w[1]}" for w in dump(table) if w[:1] == ["-N"] and w[1].startswith(f"RF{tag}-")]
    return found
