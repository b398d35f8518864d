"""Markdown table (and ratios) from benches/peers/run.sh's results.tsv.

    python3 report.py results.tsv [LOADGEN]

One row per server, model and concurrency, in the order of the runs. With
several passes per case (run.sh PASSES, e.g. INTERLEAVE=1), the row gives each
pass's req/s, their median, the medians of p50 and p99, the mean CPU and the
summed errors; ratios use the medians.
"""

import csv
import statistics as st
import sys

rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
loadgen = sys.argv[2] if len(sys.argv) > 2 else "oha"
cases = {}
for r in rows:
    cases.setdefault((r["server"], r["model"], r["concurrency"]), []).append(r)
passes = max((len(v) for v in cases.values()), default=1)

if passes == 1:
    print(f"| server | model | c | req/s | p50 ms | p99 ms | server CPU % | {loadgen} CPU % | others CPU % | errors |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
else:
    print(f"| server | model | c | req/s per pass | median req/s | p50 ms | p99 ms | server CPU % | {loadgen} CPU % "
          "| others CPU % | errors |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
median_rps = {}
for (server, model, c), rs in cases.items():
    median = st.median(float(r["req_s"]) for r in rs)
    median_rps[(server, model, c)] = median
    errors = sum(int(r["non2xx"]) + int(r["errors"]) for r in rs)
    p50 = st.median(float(r["p50_ms"]) for r in rs)
    p99 = st.median(float(r["p99_ms"]) for r in rs)
    cpu = [f"{st.mean(float(r[k]) for r in rs):.0f}" for k in ("server_cpu_pct", "client_cpu_pct", "others_cpu_pct")]
    if passes == 1:
        rps = f"{median:,.0f}"
    else:
        rps = " / ".join(f"{float(r['req_s']):,.0f}" for r in rs) + f" | {median:,.0f}"
    print(f"| {server} | {model} | {c} | {rps} | {p50:.3f} | {p99:.3f} | {' | '.join(cpu)} | {errors} |")

# switchyard against each peer, same model and concurrency.
peers = sorted({k[0] for k in median_rps if not k[0].startswith("switchyard")})
ours = [s for s in ("switchyard", "switchyard-1thread") if any(k[0] == s for k in median_rps)]
lines = []
for s in ours:
    for (server, model, c), rps in sorted(median_rps.items(), key=lambda kv: (kv[0][0], kv[0][1], int(kv[0][2]))):
        if server != s:
            continue
        parts = [f"{p} {rps / median_rps[(p, model, c)]:.2f}×" for p in peers if median_rps.get((p, model, c))]
        if parts:
            lines.append(f"| {s} | {model} | {c} | " + ", ".join(parts) + " |")
if lines:
    print()
    what = "median req/s" if passes > 1 else "req/s"
    print(f"switchyard's {what} as a multiple of each peer's (same model, same concurrency):")
    print()
    print("| server | model | c | ratio |")
    print("| --- | --- | ---: | --- |")
    print("\n".join(lines))
