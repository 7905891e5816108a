#!/usr/bin/env python3
"""What operating Cargobay costs: manifest GET/HEAD requests per second and upload throughput with
metrics, JSON access logs and the audit trail on, against the same server with all three off.

    python bench/bench_observability.py [--quick] [--rounds N] [--workers 1] [--only get,head,mono,chunked]

Two Cargobay variants run side by side in bench_registry.py's alternation, with Distribution as its
control (its figures show how noisy the machine was):

- `off`: `metrics.enabled: false`, text logs, no access log, no audit;
- `on`:  metrics on (the default), `log.format: json` (so an access line per request), an audit
  file and the audit journal in storage (`audit.path`, `audit.storage: true`).

Prints each row's medians and the ratio on/off (the target: at least 0.90 on every row). The audit
trail records changes, not reads: a manifest GET or a blob upload writes no audit line, so these
rows measure what the audit costs such requests, which is nothing by design; a manifest push
writes one (`bench_registry`'s rows do not push manifests repeatedly).

With `--instructions` it measures instead what each configuration costs the server in user-space
instructions per request (valgrind's callgrind, bench/instructions.py): a deterministic figure,
where wall-clock rates on a shared machine move by more than the 10 % being looked for.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_registry

DEFAULT_ROWS = "get,head,mono,chunked,conc-up"


OFF = {"CARGOBAY_METRICS_ENABLED": "false", "CARGOBAY_LOG_FORMAT": "text", "CARGOBAY_LOG_ACCESS": "false"}


def on(audit_dir: Path) -> dict[str, str]:
    return {"CARGOBAY_METRICS_ENABLED": "true", "CARGOBAY_LOG_FORMAT": "json", "CARGOBAY_LOG_ACCESS": "true",
            "CARGOBAY_AUDIT_PATH": str(audit_dir / "audit.jsonl"), "CARGOBAY_AUDIT_STORAGE": "true"}


def count_instructions() -> int:
    """Both configurations under callgrind: instructions per request, and the ratio off/on."""
    import instructions as ins

    workdir = Path(tempfile.mkdtemp(prefix="bench-instructions-"))
    rows = {"manifest HEAD by tag": (ins.manifest_head, 400), "manifest GET by tag": (ins.manifest_get, 400),
            "upload 1 MiB monolithic (POST, PUT)": (ins.monolithic_upload, 24)}
    print("counting instructions under callgrind (a few minutes) ...", flush=True)
    # 8 connections at once, as under load (a loaded server ends several requests per turn of its loop).
    off = ins.measure_instructions(OFF, rows, workdir / "off", connections=8)
    on_ = ins.measure_instructions(on(workdir), rows, workdir / "on", connections=8)
    print()
    print("| row | off | on | on / off (instructions; <= 1.10 is the target) |")
    print("| --- | --- | --- | --- |")
    for name in rows:
        print(f"| {name} | {off[name]:,.0f} | {on_[name]:,.0f} | {on_[name] / off[name]:.3f} |")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(argv if argv is not None else sys.argv[1:])
    if "--instructions" in argv:
        return count_instructions()
    if "--only" not in argv:
        argv += ["--only", DEFAULT_ROWS]
    if "--workers" not in argv:
        argv += ["--workers", "1"]
    audit_dir = Path(tempfile.mkdtemp(prefix="bench-audit-"))
    for name, env in (("off", OFF), ("on", on(audit_dir))):
        argv += ["--variant", ";".join([name, *(f"{k}={v}" for k, v in env.items())])]
    args = bench_registry.parse_args(argv)

    def compare(rows: list[bench_registry.Row], servers: list[bench_registry.Server]) -> None:
        print()
        print("| row | off | on | on / off |")
        print("| --- | --- | --- | --- |")
        for row in rows:
            by_variant = {label.split(" ")[0]: samples for label, samples in row.samples.items()}
            off, on = statistics.median(by_variant["off"]), statistics.median(by_variant["on"])
            print(f"| {row.title} | {off:,.0f} {row.unit} | {on:,.0f} {row.unit} | {on / off:.2f} |")
        print()
        print("(Distribution and the default Cargobay ran in the same alternation; bench_registry.py's")
        print(" own table, with them, follows.)")
        for line in bench_registry.report(rows, servers, args.rounds):
            print(line)

    try:
        bench_registry.measure(args, compare)
    except bench_registry.BenchError as exc:
        print(f"bench: FAILED: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
