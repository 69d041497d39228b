"""Scale-out through the CI system users already have: ``--shard K/N`` runs a stable part of the cases, and the
shards' ``results.json`` join back into the document one whole run would have written.

The split hashes each item's stable id (``<suite>::<case>[<runtime>]``), not its position, so adding a case moves
no other case between shards and every job computes the same split without talking to the others. Joining checks
that the files are exactly shards 1..N of one run (same N, same target, same strictness, each index once) -
merging a partial set would report a run that never happened.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from typing import Any

from conformance.errors import ReportError
from conformance.reports.status import counts, exit_code

_SHARD_RE = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


def parse_shard(value: str) -> tuple[int, int]:
    """``"2/3"`` -> ``(2, 3)``; ValueError with a one-line message for anything else."""
    match = _SHARD_RE.fullmatch(value)
    if not match:
        raise ValueError(f"--shard {value!r}: expected K/N, for example 2/3")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or not 1 <= index <= count:
        raise ValueError(f"--shard {value}: need 1 <= K <= N")
    return index, count


def in_shard(item_id: str, index: int, count: int) -> bool:
    """Whether the item with this stable id belongs to shard ``index`` (1-based) of ``count``."""
    digest = hashlib.sha256(item_id.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") % count == index - 1


def is_shard(document: dict[str, Any]) -> bool:
    return isinstance(document.get("shard"), dict)


def _group_key(document: dict[str, Any]) -> tuple[int, str, bool]:
    target = document.get("target") or {}
    name = str(target.get("name", "")) if isinstance(target, dict) else str(target)
    return int(document["shard"]["count"]), name, bool(document.get("strict_differences"))


def group_shards(documents: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    """Join the shard documents among ``documents`` run by run (same N, target and strictness); other documents
    pass through unchanged. Returns (source, document) pairs; a joined run's source is its shards' paths."""
    runs: dict[tuple[int, str, bool], list[tuple[str, dict[str, Any]]]] = {}
    placed: list[tuple[tuple[int, str, bool] | None, str, dict[str, Any]]] = []
    for source, document in documents:
        if not is_shard(document):
            placed.append((None, source, document))
            continue
        key = _group_key(document)
        if key not in runs:
            runs[key] = []
            placed.append((key, "", {}))
        runs[key].append((source, document))
    return [(source, document) if key is None
            else (" + ".join(s for s, _ in runs[key]), join_shards(runs[key]))
            for key, source, document in placed]


def join_shards(shards: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """The results document of the whole run whose N shards are given: every case once, in collection order,
    with counts and the exit code computed as that run would have."""
    count = int(shards[0][1]["shard"]["count"])
    seen: dict[int, str] = {}
    for source, document in shards:
        index = int(document["shard"]["index"])
        if index in seen:
            raise ReportError(f"{seen[index]} and {source} are both shard {index}/{count}")
        seen[index] = source
    missing = sorted(set(range(1, count + 1)) - set(seen))
    if missing:
        raise ReportError(f"shard {missing[0]}/{count} is missing (have {', '.join(seen[i] for i in sorted(seen))})")
    ordered = [document for _, document in sorted(shards, key=lambda pair: int(pair[1]["shard"]["index"]))]
    cases = sorted((case for document in ordered for case in document["cases"]),
                   key=lambda case: int(case.get("position", 0)))
    runtimes: dict[str, Any] = {}
    for document in ordered:
        for name, info in (document.get("runtimes") or {}).items():
            runtimes.setdefault(name, info)
    errors: list[Any] = []
    for document in ordered:
        errors += [e for e in document.get("collect_errors", []) if e not in errors]
    strict = bool(ordered[0].get("strict_differences"))
    run_ids = list(dict.fromkeys(str(d.get("run_id", "")) for d in ordered))
    started = min(str(d.get("started", "")) for d in ordered)
    finished = max(str(d.get("finished", "")) for d in ordered)
    return {
        "format": "conformance-results/1",
        "run_id": run_ids[0] if len(run_ids) == 1 else "+".join(run_ids),
        "started": started,
        "finished": finished,
        "duration": _span(started, finished, ordered),
        "target": next((d["target"] for d in ordered if d.get("cases")), ordered[0].get("target", {})),
        "runtimes": runtimes,
        "summary": counts(cases),
        "exit_code": exit_code(cases, errors, strict=strict),
        "strict_differences": strict,
        "collect_errors": errors,
        "cases": cases,
        "joined_shards": count,
    }


def _span(started: str, finished: str, documents: list[dict[str, Any]]) -> float:
    """Wall-clock seconds from the first shard's start to the last one's end (they may run in parallel)."""
    try:
        return round((datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds(), 3)
    except ValueError:
        return round(max(float(d.get("duration", 0.0)) for d in documents), 3)
