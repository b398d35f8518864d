"""Markdown table (and ratios) from benches/peers/run.sh's results.tsv."""

import csv
import sys

rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
print("| server | model | c | req/s | p50 ms | p99 ms | server CPU % | oha CPU % | others CPU % | errors |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for r in rows:
    errors = int(r["non2xx"]) + int(r["errors"])
    print(f"| {r['server']} | {r['model']} | {r['concurrency']} | {float(r['req_s']):,.0f} | {r['p50_ms']} | "
          f"{r['p99_ms']} | {r['server_cpu_pct']} | {r['oha_cpu_pct']} | {r['others_cpu_pct']} | {errors} |")

# switchyard against each peer, same model and concurrency.
by = {(r["server"], r["model"], r["concurrency"]): float(r["req_s"]) for r in rows}
peers = sorted({r["server"] for r in rows if not r["server"].startswith("switchyard")})
ours = [s for s in ("switchyard", "switchyard-1thread") if any(k[0] == s for k in by)]
lines = []
for s in ours:
    for (server, model, c), rps in sorted(by.items(), key=lambda kv: (kv[0][0], kv[0][1], int(kv[0][2]))):
        if server != s:
            continue
        parts = [f"{p} {rps / by[(p, model, c)]:.1f}×" for p in peers if by.get((p, model, c))]
        if parts:
            lines.append(f"| {s} | {model} | {c} | " + ", ".join(parts) + " |")
if lines:
    print()
    print("switchyard's req/s as a multiple of each peer's (same model, same concurrency):")
    print()
    print("| server | model | c | ratio |")
    print("| --- | --- | ---: | --- |")
    print("\n".join(lines))
