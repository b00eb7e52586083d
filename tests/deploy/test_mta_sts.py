"""MTA-STS (RFC 8461) on the deployed stack, both ways: the policy other servers fetch from us
at https://mta-sts.DOMAIN/.well-known/mta-sts.txt is exactly what `mailglue dns` tells the
admin to publish, and Postfix asks the deployed mta-sts-daemon for each destination's policy."""

from __future__ import annotations

import hashlib
import http.client
import re
import socket
import ssl
import subprocess
from typing import Any

from tests.deploy.stack import DEPLOY_MARKS
from tests.harness.mta_sts import socketmap_query

pytestmark = DEPLOY_MARKS

MAILGLUE = "/opt/mailglue/venv/bin/mailglue"
CERT = "/etc/ssl/mailglue/mailglue.crt"


def https_get(host: str, path: str, port: int = 443) -> tuple[int, str, bytes]:
    """GET as a sending MTA would: to this host's HTTPS, with `host` as SNI and Host header."""
    context = ssl.create_default_context(cafile=CERT)
    # The self-signed certificate names the mail host only; a public one must name mta-sts.*.
    context.check_hostname = False
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        tls.sendall(request.encode("ascii"))
        response = http.client.HTTPResponse(tls)
        response.begin()
        return response.status, response.getheader("Content-Type", ""), response.read()


def mailglue_dns(*args: str) -> str:
    shown = subprocess.run(
        [MAILGLUE, "dns", *args], capture_output=True, text=True, check=False, timeout=60
    )
    assert shown.returncode == 0, shown.stderr
    return shown.stdout


def test_our_mta_sts_policy_is_served_as_mailglue_dns_prints_it(deployed: dict[str, Any]) -> None:
    zone = mailglue_dns()
    status, content_type, body = https_get("mta-sts.example.org", "/.well-known/mta-sts.txt")
    assert status == 200, body
    assert content_type.split(";")[0].strip() == "text/plain", content_type
    # `mailglue dns` shows the file as comment lines after its heading ...
    shown = zone.split("; MTA-STS policy file", 1)[1].splitlines()[1:]
    assert body.decode("ascii").splitlines() == [line.removeprefix("; ") for line in shown]
    assert body.endswith(b"\r\n") and body.count(b"\r\n") == len(shown)
    # ... and the TXT record's id is the digest of the very bytes served.
    txt_id = re.search(r'(?m)^_mta-sts\.example\.org\.\s+3600 IN TXT\s+"v=STSv1; id=(\w+)"$', zone)
    assert txt_id is not None, zone
    assert txt_id.group(1) == hashlib.sha256(body).hexdigest()[:20]
    policy = subprocess.run(
        [MAILGLUE, "dns", "--mta-sts-policy"], capture_output=True, check=True, timeout=60
    )
    assert body == policy.stdout  # bytes: the CRLF line ends are part of the file
    mode = deployed["vars"].get("mailglue_dns_mta_sts_mode", "testing")
    assert f"mode: {mode}\r\n".encode() in body and b"mx: mail.example.org\r\n" in body


def test_the_mta_sts_name_serves_only_the_policy(deployed: dict[str, Any]) -> None:
    status, _, _ = https_get("mta-sts.example.org", "/")
    assert status == 404
    # The webmail's own name is untouched by the mta-sts server block.
    status, content_type, _ = https_get("localhost", "/")
    assert status == 200 and "text/html" in content_type


# --- outbound: Postfix asks mta-sts-daemon ----------------------------------------------------

STS_MAP = "socketmap:inet:127.0.0.1:8461:postfix"


def test_postfix_asks_the_deployed_mta_sts_daemon(deployed: dict[str, Any]) -> None:
    postconf = subprocess.run(
        ["postconf", "-h", "smtp_tls_policy_maps"], capture_output=True, text=True, check=True
    )
    assert postconf.stdout.strip() == STS_MAP
    # A next hop given as an address has no MTA-STS policy: the daemon answers at once,
    # without DNS (nothing leaves the machine), through Postfix's own socketmap client too.
    assert socketmap_query(("127.0.0.1", 8461), "postfix", "[127.0.0.1]:2525") == b"NOTFOUND "
    lookup = subprocess.run(
        ["postmap", "-q", "[127.0.0.1]:2525", STS_MAP], capture_output=True, text=True, timeout=30
    )
    assert lookup.returncode == 1 and lookup.stdout == "", lookup  # 1: not found, not an error
    listening = subprocess.run(["ss", "-Hltn", "sport = :8461"], capture_output=True, text=True)
    assert listening.stdout.split()[3] == "127.0.0.1:8461", listening.stdout  # loopback only
