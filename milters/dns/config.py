"""`dns.yaml`: the facts `mailglue dns` needs, as the deployment knows them (Ansible writes
it), and the two that live in files: each DKIM public key (OpenDKIM's `SELECTOR.txt`, which
the mailglue user may read, unlike the private key) and the TLS certificate's public key.
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from milters.common.configkit import ConfigReader, load_yaml
from milters.dns.records import Dkim, Facts, MailDomain

DMARC_POLICIES = ("none", "quarantine", "reject")
MTA_STS_MODES = ("testing", "enforce")
_QUOTED = re.compile(r'"([^"]*)"')


def dkim_tags(record_file_text: str) -> dict[str, str]:
    """The tags of the TXT record in an OpenDKIM `.txt` file (its quoted strings joined)."""
    value = "".join(_QUOTED.findall(record_file_text))
    tags = {}
    for part in value.split(";"):
        name, sep, tag_value = part.partition("=")
        if sep:
            tags[name.strip()] = "".join(tag_value.split())
    return tags


def spki_sha256(pem: bytes) -> str:
    """SHA-256 of the certificate's SubjectPublicKeyInfo: TLSA `3 1 1` (RFC 6698, 7671)."""
    key = x509.load_pem_x509_certificate(pem).public_key()
    return hashlib.sha256(
        key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    ).hexdigest()


def _dkim(reader: ConfigReader) -> Dkim | None:
    selector = reader.text("selector", "")
    key_file = reader.text("key_file", "")
    reader.finish()
    if not selector or not key_file:
        reader.problem("selector" if not selector else "key_file", "is required")
        return None
    try:
        tags = dkim_tags(Path(key_file).read_text(encoding="utf-8"))
    except OSError as exc:
        reader.problem("key_file", f"cannot read {key_file}: {exc.strerror or exc}")
        return None
    public_key = tags.get("p", "")
    try:
        base64.b64decode(public_key, validate=True)
    except ValueError:
        public_key = ""
    if not public_key:
        reader.problem("key_file", f"{key_file} holds no DKIM public key (p=)")
        return None
    return Dkim(selector, public_key, tags.get("k", "rsa"))


def _domain(reader: ConfigReader) -> MailDomain:
    name = reader.text("name", "")
    if not name:
        reader.problem("name", "is required")
    keys = [k for k in (_dkim(r) for r in reader.sections("dkim")) if k is not None]
    dmarc = reader.section("dmarc")
    policy = dmarc.choice("policy", "quarantine", DMARC_POLICIES)
    reports = dmarc.optional_text("reports")
    dmarc.finish()
    reader.finish()
    return MailDomain(name, tuple(keys), policy, reports)


def parse_dns_config(source: str, data: object) -> Facts:
    top = ConfigReader(source, data)
    hostname = top.text("hostname", "")
    if not hostname:
        top.problem("hostname", "is required (the MX host's name)")
    domains = tuple(_domain(r) for r in top.sections("domains"))
    if not domains:
        top.problem("domains", "needs at least one mail domain")
    cert_file = top.optional_text("tls_cert_file")
    digest = None
    if cert_file is not None:
        try:
            digest = spki_sha256(Path(cert_file).read_bytes())
        except (OSError, ValueError) as exc:
            top.problem("tls_cert_file", f"cannot read a PEM certificate from {cert_file}: {exc}")
    sts = top.section("mta_sts")
    mode = sts.choice("mode", "testing", MTA_STS_MODES)
    max_age = sts.integer("max_age", 604800, minimum=86400, maximum=31557600)
    sts.finish()
    facts = Facts(
        hostname=hostname,
        domains=domains,
        addresses=top.text_list("addresses", ()),
        spf_include=top.text_list("spf_include", ()),
        tls_spki_sha256=digest,
        mta_sts_mode=mode,
        mta_sts_max_age=max_age,
    )
    top.finish_document()
    return facts


def load_dns_config(path: str | Path) -> Facts:
    source, data = load_yaml(path)
    return parse_dns_config(source, data)
