"""The feature manifest: the config verdicts, the live probes and the overall verdict for one target.

``check(target)`` is what both ``conformance check-kernel`` and the run command call; ``features(manifest)`` turns
it into the ``requires:`` keys suites name. A manifest round-trips through JSON (``features.json``), and
``check(..., cache_dir=D)`` reuses one written for the same target while the target's boot id is unchanged, so a
run that only needs the feature keys pays one ``cat`` instead of the probes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conformance.kernel.config import Classification, KernelConfig, classify, parse_version, read_config_file
from conformance.kernel.errors import KernelCheckError
from conformance.kernel.options import ALL_OPTIONS, NECESSARY_PROBES, Option
from conformance.kernel.probes import ProbeResult, ProbeRun, boot_id, run_probes
from conformance.targets.base import Target

FORMAT = "conformance-features/1"
_OPTIONS_BY_SYMBOL: dict[str, Option] = {o.symbol: o for o in ALL_OPTIONS}


@dataclass
class Verdict:
    """Fit to run containers or not, and what is missing."""

    ok: bool
    summary: str
    missing_necessary: list[str] = field(default_factory=list)
    missing_optional: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def to_json(self) -> dict[str, Any]:
        return {
            "status": "ok" if self.ok else "missing",
            "summary": self.summary,
            "missing_necessary": self.missing_necessary,
            "missing_optional": self.missing_optional,
        }


@dataclass
class Manifest:
    """What the target's kernel offers: ``config`` (option verdicts), ``probes`` (live), ``verdict``."""

    target: str
    release: str
    machine: str
    boot_id: str
    config_source: str | None
    config_tried: list[str]
    config_version: tuple[int, int] | None
    classifications: list[Classification]
    probes: dict[str, ProbeResult]
    verdict: Verdict
    seconds: float = 0.0

    @property
    def config(self) -> dict[str, str]:
        """``{"CONFIG_X": "enabled" | "module" | "missing" | "n/a"}``."""
        return {c.option.symbol: c.status for c in self.classifications}

    @property
    def exit_code(self) -> int:
        return self.verdict.exit_code

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "target": self.target,
            "kernel": {"release": self.release, "machine": self.machine},
            "boot_id": self.boot_id,
            "config_source": self.config_source,
            "config_tried": self.config_tried,
            "config_version": ".".join(map(str, self.config_version)) if self.config_version else None,
            "config": self.config,
            "config_notes": {c.option.symbol: c.note for c in self.classifications if c.note},
            "probes": {k: p.to_json() for k, p in self.probes.items()},
            "features": features(self),
            "verdict": self.verdict.to_json(),
            "seconds": round(self.seconds, 3),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        if data.get("format") != FORMAT:
            raise KernelCheckError(f"not a features manifest (format {data.get('format')!r})")
        notes = data.get("config_notes", {})
        classifications = [
            Classification(_OPTIONS_BY_SYMBOL[s], status, notes.get(s, ""))
            for s, status in data["config"].items()
            if s in _OPTIONS_BY_SYMBOL
        ]
        verdict = data["verdict"]
        version = data.get("config_version")
        return cls(
            target=data["target"],
            release=data["kernel"]["release"],
            machine=data["kernel"].get("machine", ""),
            boot_id=data.get("boot_id", ""),
            config_source=data.get("config_source"),
            config_tried=list(data.get("config_tried", [])),
            config_version=parse_version(version) if version else None,
            classifications=classifications,
            probes={k: ProbeResult.from_json(v) for k, v in data["probes"].items()},
            verdict=Verdict(
                ok=verdict["status"] == "ok",
                summary=verdict["summary"],
                missing_necessary=list(verdict.get("missing_necessary", [])),
                missing_optional=list(verdict.get("missing_optional", [])),
            ),
            seconds=float(data.get("seconds", 0.0)),
        )


AGGREGATED_CONTROLLERS = ("memory", "pids", "cpu", "cpuset", "devices", "freezer", "hugetlb")


def features(manifest: Manifest) -> dict[str, bool]:
    """The ``requires:`` keys: every probe's outcome (``kernel`` is a value, not a feature)."""
    return dict(sorted((k, p.ok) for k, p in manifest.probes.items() if k != "kernel"))


def with_aggregates(probes: dict[str, ProbeResult]) -> dict[str, ProbeResult]:
    """Add version-independent ``cgroup.<controller>`` keys: the v1 or the v2 controller is there."""
    out = dict(probes)
    for controller in AGGREGATED_CONTROLLERS:
        parts = [(k, probes[k].ok) for k in (f"cgroup.v1.{controller}", f"cgroup.v2.{controller}") if k in probes]
        if parts:
            shown = " or ".join(f"{k} ({'ok' if ok else 'no'})" for k, ok in parts)
            out[f"cgroup.{controller}"] = ProbeResult(ok=any(ok for _, ok in parts), evidence=shown)
    return out


def cgroup_in_use(probes: dict[str, ProbeResult]) -> set[str]:
    """Which cgroup version runtimes use on the target: v1 on v1 and hybrid hosts, v2 on pure v2 hosts."""
    layout = probes["cgroup.hybrid"].value if "cgroup.hybrid" in probes else None
    return {"v1"} if layout in ("v1", "hybrid") else {"v2"} if layout == "v2" else set()


def probe_ok(probes: dict[str, ProbeResult], key: str) -> bool:
    if key == "cgroup":
        return any(probes[k].ok for k in ("cgroup.v1", "cgroup.v2") if k in probes)
    return key in probes and probes[key].ok


def judge(classifications: list[Classification], probes: dict[str, ProbeResult], config: KernelConfig) -> Verdict:
    """Necessary options and probes present, and at least one storage driver complete → ok."""
    necessary = [c.option.symbol for c in classifications if c.option.group == "necessary" and c.status == "missing"]
    optional = [c.option.symbol for c in classifications if c.option.group == "optional" and c.status == "missing"]
    sections: dict[str, bool] = {}
    for c in classifications:
        if c.option.group == "storage" and c.status != "n/a":
            sections[c.option.section] = sections.get(c.option.section, True) and c.status != "missing"
    if config.available and not any(sections.values()):
        necessary.append("storage driver (none of " + ", ".join(sections) + " is complete)")
    necessary += [f"probe {k}" for k in NECESSARY_PROBES if not probe_ok(probes, k)]
    optional += [f"probe {k}" for k, p in probes.items() if not p.ok and k not in NECESSARY_PROBES]
    source = "" if config.available else " (kernel config unavailable: probes only)"
    if necessary:
        summary = f"MISSING {len(necessary)} necessary: {', '.join(necessary)}{source}"
    else:
        summary = f"OK: every necessary feature is present ({len(optional)} optional missing){source}"
    return Verdict(ok=not necessary, summary=summary, missing_necessary=necessary, missing_optional=optional)


def build_manifest(target_name: str, run: ProbeRun, config: KernelConfig) -> Manifest:
    run.probes = with_aggregates(run.probes)
    own_config = config is run.config
    version = parse_version(run.release) if own_config else (config.version or parse_version(run.release))
    classifications = classify(config, version=version, cgroup_in_use=cgroup_in_use(run.probes))
    return Manifest(
        target=target_name,
        release=run.release,
        machine=run.machine,
        boot_id=run.boot_id,
        config_source=config.source,
        config_tried=config.tried,
        config_version=version,
        classifications=classifications,
        probes=run.probes,
        verdict=judge(classifications, run.probes, config),
        seconds=run.seconds,
    )


def _cache_path(cache_dir: Path, target: Target) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", target.spec.raw.split("?")[0])
    return cache_dir / f"features-{safe}.json"


def load_manifest(path: str | Path) -> Manifest:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise KernelCheckError(f"cannot read features manifest {path}: {exc}") from None
    return Manifest.from_json(data)


def check(target: Target, kernel_config: str | Path | None = None, *, cache_dir: str | Path | None = None) -> Manifest:
    """Probe ``target`` (already ``up()``) and classify its kernel config, or ``kernel_config`` when given.

    With ``cache_dir`` (and no ``kernel_config``), a manifest saved there for this target is reused while the
    target's boot id is unchanged, and a fresh one is saved.
    """
    cache = _cache_path(Path(cache_dir), target) if cache_dir and kernel_config is None else None
    if cache is not None and cache.exists():
        try:
            cached = load_manifest(cache)
        except (KernelCheckError, KeyError, ValueError):
            cached = None
        if cached is not None and cached.boot_id and cached.boot_id == boot_id(target):
            return cached
    given = read_config_file(kernel_config) if kernel_config is not None else None  # fail before probing
    run = run_probes(target)
    config = given if given is not None else run.config
    manifest = build_manifest(target.name, run, config)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(json.dumps(manifest.to_json(), indent=1))
        tmp.replace(cache)
    return manifest
