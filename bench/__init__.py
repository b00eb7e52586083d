"""mailglue benchmarks: the scan milter against its peers and against the spamd+clamd limit.

`python -m bench` (or `make bench`) runs everything in one go; `--quick` is a smoke run.
"""
