"""`mailglue dns`: print the records to publish, as zone-file lines with their reasons."""

from __future__ import annotations

import sys

from milters.dns.config import load_dns_config
from milters.dns.records import zone_text


def run(config_path: str) -> int:
    sys.stdout.write(zone_text(load_dns_config(config_path)))
    return 0
