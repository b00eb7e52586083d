"""Outside sender domains with real SPF, DKIM and DMARC records, served by NSD (nsd.py).

Under `sender.test`, each domain publishes an SPF record and a DMARC policy; `good` also a DKIM
key, whose private half signs test messages here. Only `good` allows our loopback client in
its SPF record, so mail from the others fails SPF, as forged mail does.
"""

from __future__ import annotations

import base64
from pathlib import Path

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.harness.nsd import Nsd

ZONE = "sender.test"
SELECTOR = "sel"
SIGNED_HEADERS = [b"from", b"to", b"subject", b"date", b"message-id"]
_ELSEWHERE = "v=spf1 ip4:192.0.2.1 -all"  # never loopback

# domain label -> (SPF record, DMARC record)
DOMAINS = {
    "good": ("v=spf1 ip4:127.0.0.1 -all", "v=DMARC1; p=reject"),
    "bank": (_ELSEWHERE, "v=DMARC1; p=reject"),
    "lax": (_ELSEWHERE, "v=DMARC1; p=none"),
    "careful": (_ELSEWHERE, "v=DMARC1; p=quarantine"),
    "trial": (_ELSEWHERE, "v=DMARC1; p=reject; pct=0"),
}


def domain(label: str) -> str:
    return f"{label}.{ZONE}"


def _txt(text: str) -> str:
    """A TXT rdata in zone-file syntax, split into 255-byte strings."""
    return " ".join(f'"{text[i : i + 255]}"' for i in range(0, len(text), 255))


class SenderDomains:
    """The zone and the signing key of the test sender domains."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._pem = self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )

    def records(self) -> str:
        public = self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        key = f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode()}"
        lines = [f"{SELECTOR}._domainkey.{domain('good')}. IN TXT {_txt(key)}"]
        for label, (spf, dmarc) in DOMAINS.items():
            lines.append(f"{domain(label)}. IN TXT {_txt(spf)}")
            lines.append(f"_dmarc.{domain(label)}. IN TXT {_txt(dmarc)}")
        return "\n".join(lines) + "\n"

    def serve(self, root: Path) -> Nsd:
        """NSD on a loopback port serving the zone (the caller stops it)."""
        server = Nsd(root, ZONE)
        server.start(self.records())
        return server

    def sign(self, raw: bytes, label: str = "good", canonicalize: str = "relaxed/simple") -> bytes:
        """`raw` with a DKIM-Signature of `label`'s domain (only `good` publishes the key);
        `canonicalize` is the signature's c= (header/body)."""
        header_c, body_c = canonicalize.encode().split(b"/")
        signature: bytes = dkim.sign(
            raw,
            SELECTOR.encode(),
            domain(label).encode(),
            self._pem,
            include_headers=SIGNED_HEADERS,
            canonicalize=(header_c, body_c),
        )
        return signature + raw
