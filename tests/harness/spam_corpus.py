"""The messages on which a tuned and an untuned spamd must agree (issue 17).

- the benchmark's messages (`bench/corpus.py`: 5 KB of text, 100 KB with an attachment; the
  10 MB one is left out: it is above the milter's `spam.max_size` and never reaches spamd);
- SpamAssassin's own sample spam and ham (Debian's spamassassin package, examples/);
- CPython's email test messages (`test.test_email` data files, Debian's
  libpython3.11-testsuite): odd MIME structures, charsets and headers.

A missing source is an error, not a smaller corpus: `scripts/install-debian-packages.sh`
installs them all.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from bench.corpus import template

SA_EXAMPLES = Path("/usr/share/doc/spamassassin/examples")
SA_SAMPLES = ("sample-spam.txt", "sample-nonspam.txt")
BENCH_SIZES = ("5KB", "100KB")


class CorpusMissing(RuntimeError):
    """A source of the verdict corpus is not installed."""


def cpython_email_dir() -> Path:
    spec = importlib.util.find_spec("test.test_email")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        data = Path(location) / "data"
        if any(data.glob("msg_*.txt")):
            return data
    raise CorpusMissing(
        "CPython's test.test_email data not found: apt-get install libpython3.11-testsuite"
    )


def verdict_corpus() -> list[tuple[str, bytes]]:
    """(name, raw message) for every message of the corpus, in a fixed order."""
    messages = [
        (f"bench-{size}", template(size).render(f"<verdict-{size}@bench.relay.test>"))
        for size in BENCH_SIZES
    ]
    for name in SA_SAMPLES:
        path = SA_EXAMPLES / name
        if not path.is_file():
            raise CorpusMissing(f"{path} not found (Debian's spamassassin package ships it)")
        messages.append((f"spamassassin-{name}", path.read_bytes()))
    for path in sorted(cpython_email_dir().glob("msg_*.txt")):
        messages.append((f"cpython-{path.name}", path.read_bytes()))
    return messages
