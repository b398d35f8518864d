"""Replaces one generated section of BENCHMARKS.md.

    python3 benches/bench_md.py BENCHMARKS.md NAME CONTENT_FILE

The section is the text between `<!-- NAME:begin -->` and `<!-- NAME:end -->`;
it is appended at the end of the file when the markers are missing.
"""

import sys
from pathlib import Path

path, name, content_file = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
content = content_file.read_text().rstrip("\n")
text = path.read_text() if path.exists() else "# Benchmarks\n"
block = f"{begin}\n{content}\n{end}"
if begin in text and end in text:
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    text = head + block + tail
else:
    text = text.rstrip("\n") + "\n\n" + block + "\n"
path.write_text(text)
