"""Config parsing and classification, on small hand-written configs (the real one is covered elsewhere)."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from conformance.kernel.config import classify, parse_config, parse_version, read_config_file
from conformance.kernel.errors import KernelCheckError
from conformance.kernel.options import ALL_OPTIONS, Option

SAMPLE = """#
# Linux/x86 5.4.0 Kernel Configuration
#
CONFIG_USER_NS=y
CONFIG_MEMCG=m
# CONFIG_VETH is not set
CONFIG_MEMCG_SWAP=y
CONFIG_LOCALVERSION="-test"
"""


def by_symbol(results: list) -> dict[str, str]:  # type: ignore[type-arg]
    return {c.option.symbol: c.status for c in results}


def test_parse_reads_values_unset_lines_and_header_version() -> None:
    config = parse_config(SAMPLE, "sample")
    assert config.version == (5, 4)
    assert config.state("CONFIG_USER_NS") == "y"
    assert config.state("CONFIG_MEMCG") == "m"
    assert config.state("CONFIG_VETH") == "n"
    assert config.state("CONFIG_NOT_THERE") == "n"
    assert config.values["CONFIG_LOCALVERSION"] == '"-test"'


@pytest.mark.parametrize("release, version", [("6.18.44-fc-v657", (6, 18)), ("5.10.0-28-amd64", (5, 10)),
                                              ("garbage", None)])
def test_parse_version(release: str, version: tuple[int, int] | None) -> None:
    assert parse_version(release) == version


def test_classify_enabled_module_missing() -> None:
    result = by_symbol(classify(parse_config(SAMPLE, "s"), version=(5, 4), cgroup_in_use={"v1"}))
    assert result["CONFIG_USER_NS"] == "enabled"
    assert result["CONFIG_MEMCG"] == "module"
    assert result["CONFIG_VETH"] == "missing"
    assert result["CONFIG_NET_NS"] == "missing"


def test_version_awareness_makes_removed_options_not_applicable() -> None:
    config = parse_config(SAMPLE, "s")
    old = by_symbol(classify(config, version=(5, 4), cgroup_in_use={"v1"}))
    new = by_symbol(classify(config, version=(6, 1), cgroup_in_use={"v1"}))
    assert old["CONFIG_MEMCG_SWAP"] == "enabled"
    assert new["CONFIG_MEMCG_SWAP"] == "n/a"
    assert old["CONFIG_NF_NAT_IPV4"] == "n/a"  # removed in 5.2, and 5.4 is later
    assert by_symbol(classify(config, version=(4, 19), cgroup_in_use={"v1"}))["CONFIG_NF_NAT_IPV4"] == "missing"
    assert old["CONFIG_TIME_NS"] == "n/a"  # added in 5.6


def test_cgroup_layout_decides_v1_only_and_v2_only_options() -> None:
    config = parse_config(SAMPLE, "s")
    v1 = by_symbol(classify(config, version=(6, 1), cgroup_in_use={"v1"}))
    v2 = by_symbol(classify(config, version=(6, 1), cgroup_in_use={"v2"}))
    assert v1["CONFIG_CGROUP_FREEZER"] == "missing" and v2["CONFIG_CGROUP_FREEZER"] == "n/a"
    assert v1["CONFIG_CGROUP_BPF"] == "n/a" and v2["CONFIG_CGROUP_BPF"] == "missing"


def test_note_says_why_not_applicable() -> None:
    results = classify(parse_config(SAMPLE, "s"), version=(6, 5), cgroup_in_use={"v1"})
    note = next(c.note for c in results if c.option.symbol == "CONFIG_MEMCG_SWAP")
    assert "6.5" in note and "6.1" in note


def test_read_config_file_plain_and_gzipped(tmp_path: Path) -> None:
    plain = tmp_path / "config"
    plain.write_text(SAMPLE)
    packed = tmp_path / "config.gz"
    packed.write_bytes(gzip.compress(SAMPLE.encode()))
    assert read_config_file(plain).values == read_config_file(packed).values


def test_read_config_file_rejects_missing_and_non_config(tmp_path: Path) -> None:
    with pytest.raises(KernelCheckError, match="cannot read"):
        read_config_file(tmp_path / "nope")
    other = tmp_path / "other"
    other.write_text("hello\n")
    with pytest.raises(KernelCheckError, match="not a kernel config"):
        read_config_file(other)


def test_option_tables_have_no_duplicates_and_valid_ranges() -> None:
    symbols = [o.symbol for o in ALL_OPTIONS]
    assert len(symbols) == len(set(symbols))
    for option in ALL_OPTIONS:
        assert isinstance(option, Option)
        if option.since and option.until:
            assert option.since <= option.until
        if option.group in ("network", "storage"):
            assert option.section, option.symbol
