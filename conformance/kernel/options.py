"""The kernel options a container host needs, grouped the way moby's check-config.sh groups them.

Each option carries the kernel versions it exists in (``since``/``until``, both inclusive, as (major, minor)) and,
for cgroup-v1-only controllers, the cgroup version it matters for. Outside its range an option is classified
``n/a`` rather than ``missing``: CONFIG_MEMCG_SWAP, for instance, was folded into CONFIG_MEMCG/CONFIG_SWAP in
Linux 6.1, so a 6.x kernel lacking it lacks nothing. Groups: ``necessary`` (a container runtime cannot work
without it), ``optional`` (a feature suites may require), ``network`` and ``storage`` drivers (each with a
``section`` naming the driver). At least one storage driver must be complete.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Group = Literal["necessary", "optional", "network", "storage"]
CgroupVersion = Literal["v1", "v2"]
Version = tuple[int, int]

GROUP_TITLES: dict[str, str] = {
    "necessary": "Generally Necessary",
    "optional": "Optional Features",
    "network": "Network Drivers",
    "storage": "Storage Drivers",
}


@dataclass(frozen=True)
class Option:
    """One ``CONFIG_*`` symbol and when it applies."""

    name: str
    group: Group
    section: str = ""
    since: Version | None = None
    until: Version | None = None
    cgroup: CgroupVersion | None = None
    unless: str | None = None  # n/a when this other option is set (e.g. EXT3_* when ext4 serves ext3)
    why: str = ""

    @property
    def symbol(self) -> str:
        return f"CONFIG_{self.name}"


def _group(group: Group, names: str, section: str = "", **kw: object) -> list[Option]:
    return [Option(name, group, section, **kw) for name in names.split()]  # type: ignore[arg-type]


NECESSARY: list[Option] = [
    *_group("necessary", "NAMESPACES NET_NS PID_NS IPC_NS UTS_NS CGROUPS"),
    *_group("necessary", "CGROUP_CPUACCT CGROUP_DEVICE CGROUP_FREEZER", cgroup="v1",
            why="v1 controllers; cgroup v2 has cpu stats and the freezer built in and controls devices with BPF"),
    *_group("necessary", "CGROUP_SCHED CPUSETS MEMCG KEYS VETH BRIDGE BRIDGE_NETFILTER"),
    *_group("necessary", "IP_NF_FILTER IP_NF_TARGET_MASQUERADE NETFILTER_XT_MATCH_ADDRTYPE"),
    *_group("necessary", "NETFILTER_XT_MATCH_CONNTRACK NETFILTER_XT_MARK IP_NF_NAT NF_NAT POSIX_MQUEUE"),
    Option("CGROUP_BPF", "necessary", cgroup="v2", why="device control on cgroup v2 is a BPF program"),
    Option("DEVPTS_MULTIPLE_INSTANCES", "necessary", until=(4, 7), why="always on since 4.8"),
    Option("NF_NAT_IPV4", "necessary", until=(5, 1), why="merged into NF_NAT in 5.2"),
    Option("NF_NAT_NEEDED", "necessary", until=(5, 2), why="removed in 5.3"),
]

OPTIONAL: list[Option] = [
    *_group("optional", "USER_NS SECCOMP SECCOMP_FILTER CGROUP_PIDS"),
    Option("MEMCG_SWAP", "optional", until=(6, 0), why="folded into MEMCG and SWAP in 6.1"),
    Option("MEMCG_SWAP_ENABLED", "optional", until=(5, 8), why="swap accounting on by default since 5.8"),
    Option("MEMCG_KMEM", "optional", until=(4, 5), why="always on with MEMCG since 4.6"),
    Option("RESOURCE_COUNTERS", "optional", until=(3, 18), why="removed in 3.19"),
    Option("IOSCHED_CFQ", "optional", until=(4, 20), why="CFQ removed in 5.0"),
    Option("CFQ_GROUP_IOSCHED", "optional", until=(4, 20), why="CFQ removed in 5.0"),
    *_group("optional", "BLK_CGROUP BLK_DEV_THROTTLING CGROUP_PERF CGROUP_HUGETLB"),
    Option("NET_CLS_CGROUP", "optional", cgroup="v1", why="a v1-only controller"),
    Option("NETPRIO_CGROUP", "optional", until=(3, 13), cgroup="v1", why="renamed CGROUP_NET_PRIO in 3.14"),
    Option("CGROUP_NET_PRIO", "optional", since=(3, 14), cgroup="v1", why="a v1-only controller"),
    *_group("optional", "CFS_BANDWIDTH FAIR_GROUP_SCHED RT_GROUP_SCHED IP_NF_TARGET_REDIRECT"),
    *_group("optional", "IP_VS IP_VS_NFCT IP_VS_PROTO_TCP IP_VS_PROTO_UDP IP_VS_RR"),
    Option("NETFILTER_XT_MATCH_IPVS", "optional",
           why="only docker swarm's IPVS load balancing uses it (check-config.sh calls it necessary)"),
    *_group("optional", "EXT3_FS EXT3_FS_XATTR EXT3_FS_POSIX_ACL EXT3_FS_SECURITY", unless="EXT4_USE_FOR_EXT2",
            why="ext4 serves ext3 when EXT4_USE_FOR_EXT2 is set"),
    *_group("optional", "EXT4_FS EXT4_FS_POSIX_ACL EXT4_FS_SECURITY"),
    *_group("optional", "TIME_NS", since=(5, 6), why="time namespaces appeared in 5.6"),
    *_group("optional", "NF_TABLES NFT_NAT NFT_MASQ"),
]

NETWORK: list[Option] = [
    *_group("network", "VXLAN BRIDGE_VLAN_FILTERING", "overlay"),
    *_group("network", "CRYPTO CRYPTO_AEAD CRYPTO_GCM CRYPTO_SEQIV CRYPTO_GHASH XFRM XFRM_USER XFRM_ALGO INET_ESP",
            "overlay (encrypted)"),
    Option("INET_XFRM_MODE_TRANSPORT", "network", "overlay (encrypted)", until=(5, 3), why="removed in 5.4"),
    *_group("network", "IPVLAN", "ipvlan"),
    *_group("network", "MACVLAN DUMMY", "macvlan"),
    *_group("network", "NF_NAT_FTP NF_CONNTRACK_FTP NF_NAT_TFTP NF_CONNTRACK_TFTP", "ftp,tftp client in container"),
]

STORAGE: list[Option] = [
    *_group("storage", "AUFS_FS", "aufs"),
    *_group("storage", "BTRFS_FS BTRFS_FS_POSIX_ACL", "btrfs"),
    *_group("storage", "BLK_DEV_DM DM_THIN_PROVISIONING", "devicemapper"),
    *_group("storage", "OVERLAY_FS", "overlay"),
]

ALL_OPTIONS: list[Option] = [*NECESSARY, *OPTIONAL, *NETWORK, *STORAGE]

#: Live probes whose failure makes the host unfit to run containers at all (exit status 1).
NECESSARY_PROBES: tuple[str, ...] = (
    "ns.mount", "ns.pid", "ns.net", "ns.ipc", "ns.uts", "cgroup", "overlay", "net.veth", "net.bridge",
)


def applies(option: Option, version: Version | None, cgroup_in_use: set[str], config_set: set[str]) -> str:
    """Why ``option`` does not apply here ("" when it does): the kernel version, cgroup layout or config."""
    if version is not None:
        if option.since and version < option.since:
            return f"not in Linux {version[0]}.{version[1]} ({option.why or 'added later'})"
        if option.until and version > option.until:
            return f"not in Linux {version[0]}.{version[1]} ({option.why or 'removed'})"
    if option.cgroup and cgroup_in_use and option.cgroup not in cgroup_in_use:
        return f"cgroup {option.cgroup} not in use on the target ({option.why})"
    if option.unless and f"CONFIG_{option.unless}" in config_set:
        return f"CONFIG_{option.unless} is set ({option.why})"
    return ""
