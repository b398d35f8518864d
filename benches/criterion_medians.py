"""Prints the medians of the last `cargo bench --bench inprocess` run.

    python3 benches/criterion_medians.py [target/criterion]

Reads `<group>/<function>/<input>/new/estimates.json` (criterion's own
files) and prints a Markdown table: median time per iteration, per row
(every benchmark's input is a number of rows), and the 95% interval of the
median.
"""

import json
import sys
from pathlib import Path

root = Path(sys.argv[1] if len(sys.argv) > 1 else "target/criterion")


def human(ns: float) -> str:
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns:.0f} ns"


rows = []
for est in sorted(root.glob("*/*/*/new/estimates.json")):
    group, function, param = est.parts[-5], est.parts[-4], est.parts[-3]
    median = json.loads(est.read_text())["median"]
    ci = median["confidence_interval"]
    n = int(param) if param.isdigit() else 1
    rows.append((group, function, param, median["point_estimate"], ci["lower_bound"], ci["upper_bound"], n))

order = {"json_decode": 0, "json_encode": 1, "path": 2, "router": 3, "ort": 4}
rows.sort(key=lambda r: (order.get(r[0], 9), r[0], r[1], int(r[2]) if r[2].isdigit() else 0))
print("| group | benchmark | rows | median ns/op | median per op | per row | 95% CI of the median |")
print("| --- | --- | ---: | ---: | ---: | ---: | --- |")
for group, function, param, med, lo, hi, n in rows:
    print(f"| {group} | {function} | {param} | {med:,.0f} | {human(med)} | {human(med / n)} | {human(lo)} – {human(hi)} |")
