"""`mailglue dns`: the records, the facts read from OpenDKIM's key file and the certificate,
and the README's DNS section, which is this code's output for the example below."""

from __future__ import annotations

import datetime
import hashlib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID

from milters.cli import main
from milters.common.configkit import ConfigError
from milters.dns.check import compare
from milters.dns.config import dkim_tags, parse_dns_config
from milters.dns.records import Dkim, Facts, MailDomain, all_records, txt, zone_text

README = Path(__file__).resolve().parents[2] / "README.md"

EXAMPLE = Facts(
    hostname="mail.example.org",
    domains=(
        MailDomain(
            "example.org",
            (Dkim("mail", "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA7m9...IDAQAB"),),
            dmarc_policy="quarantine",
            dmarc_reports="postmaster@example.org",
        ),
    ),
    addresses=("192.0.2.25",),
    tls_spki_sha256="3f1c" * 16,
)

OPENDKIM_TXT = (  # as opendkim-genkey writes it: the value in several quoted strings
    'mail._domainkey\tIN\tTXT\t( "v=DKIM1; h=sha256; k=rsa; "\n'
    '\t  "p=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwd"\n'
    '\t  "Hh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7" )  ; ----- DKIM key mail\n'
)
PUBLIC_KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7"


def by_name(facts: Facts) -> dict[tuple[str, str], str]:
    return {(r.name, r.type): r.value for r in all_records(facts)}


def test_the_records_a_domain_needs() -> None:
    found = by_name(EXAMPLE)
    assert found["example.org.", "MX"] == "10 mail.example.org."
    assert found["example.org.", "TXT"] == '"v=spf1 mx -all"'
    assert found["mail._domainkey.example.org.", "TXT"].startswith('"v=DKIM1; k=rsa; p=MIIB')
    dmarc = found["_dmarc.example.org.", "TXT"]
    assert dmarc == '"v=DMARC1; p=quarantine; rua=mailto:postmaster@example.org"'
    assert found["_mta-sts.example.org.", "TXT"].startswith('"v=STSv1; id=')
    assert found["_submission._tcp.example.org.", "SRV"] == "0 1 587 mail.example.org."
    assert found["_imaps._tcp.example.org.", "SRV"] == "0 1 993 mail.example.org."
    assert found["autoconfig.example.org.", "CNAME"] == "mail.example.org."
    assert found["mail.example.org.", "A"] == "192.0.2.25"
    for port in (25, 587, 993):
        assert found[f"_{port}._tcp.mail.example.org.", "TLSA"] == "3 1 1 " + "3f1c" * 16


def test_spf_names_the_relay_and_long_txt_is_split() -> None:
    relayed = Facts("mx.example.org", (MailDomain("example.org"),), spf_include=("relay.net",))
    assert by_name(relayed)["example.org.", "TXT"] == '"v=spf1 mx include:relay.net -all"'
    assert txt("a" * 300) == '"' + "a" * 255 + '" "' + "a" * 45 + '"'


def test_the_mta_sts_id_follows_the_policy() -> None:
    enforce = Facts(**{**EXAMPLE.__dict__, "mta_sts_mode": "enforce"})
    sts = ("_mta-sts.example.org.", "TXT")
    assert by_name(EXAMPLE)[sts] != by_name(enforce)[sts]
    assert by_name(EXAMPLE)[sts] == by_name(Facts(**EXAMPLE.__dict__))[sts]


def test_mailglue_dns_mta_sts_policy_prints_the_file_the_txt_id_is_made_of(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What the deployment serves is this output: it must be the policy byte for byte (CRLF
    lines, RFC 8461 3.2) and the file whose digest the TXT record's id is."""
    config = tmp_path / "dns.yaml"
    config.write_text(
        "hostname: Mail.Example.org\nmta_sts: {mode: enforce, max_age: 86400}\n"
        "domains: [{name: example.org}]\n",
        encoding="utf-8",
    )
    assert main(["dns", "--config", str(config), "--mta-sts-policy"]) == 0
    served = capsys.readouterr().out
    assert served == (
        "version: STSv1\r\nmode: enforce\r\nmx: mail.example.org\r\nmax_age: 86400\r\n"
    )
    assert main(["dns", "--config", str(config)]) == 0
    zone = capsys.readouterr().out
    txt_id = hashlib.sha256(served.encode()).hexdigest()[:20]
    assert f'"v=STSv1; id={txt_id}"' in zone
    assert all(f"; {line}\n" in zone for line in served.splitlines())


def test_opendkim_key_file_tags() -> None:
    tags = dkim_tags(OPENDKIM_TXT)
    assert tags["k"] == "rsa" and tags["p"] == PUBLIC_KEY


def self_signed(tmp_path: Path) -> tuple[Path, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mail.example.org")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    path = tmp_path / "cert.pem"
    path.write_bytes(cert.public_bytes(Encoding.PEM))
    spki = key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return path, hashlib.sha256(spki).hexdigest()


def test_dns_yaml_reads_the_key_file_and_the_certificate(tmp_path: Path) -> None:
    key_file = tmp_path / "mail.txt"
    key_file.write_text(OPENDKIM_TXT, encoding="utf-8")
    cert, digest = self_signed(tmp_path)
    facts = parse_dns_config(
        "dns.yaml",
        {
            "hostname": "mail.example.org",
            "tls_cert_file": str(cert),
            "domains": [
                {"name": "example.org", "dkim": [{"selector": "mail", "key_file": str(key_file)}]}
            ],
        },
    )
    assert facts.tls_spki_sha256 == digest
    assert facts.domains[0].dkim[0].public_key == PUBLIC_KEY


def test_dns_yaml_problems_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        parse_dns_config(
            "dns.yaml",
            {
                "domains": [
                    {
                        "name": "example.org",
                        "dkim": [{"selector": "mail", "key_file": str(tmp_path / "none")}],
                    },
                    {"dmarc": {"policy": "bounce"}},
                ]
            },
        )
    text = str(err.value)
    assert "key 'hostname'" in text
    assert "key 'domains[0].dkim[0].key_file'" in text
    assert "key 'domains[1].name'" in text and "key 'domains[1].dmarc.policy'" in text


def test_the_readme_shows_what_mailglue_dns_prints() -> None:
    assert zone_text(EXAMPLE) in README.read_text(encoding="utf-8")


# --- --check: what DNS answers against what should be published ------------------------------


def answers_for(
    facts: Facts, *, drop: tuple[str, str] | None = None
) -> dict[tuple[str, str], list[str]]:
    """DNS as a careful admin published it (in dnspython's spelling), minus one record."""
    found: dict[tuple[str, str], list[str]] = {}
    for r in all_records(facts):
        if (r.name, r.type) != drop:
            found.setdefault((r.name, r.type), []).append(r.value)
    return found


def test_everything_published_is_ok() -> None:
    findings = compare(all_records(EXAMPLE), answers_for(EXAMPLE))
    assert {f.status for f in findings} == {"ok"}


def test_a_missing_dmarc_record_is_named() -> None:
    findings = compare(
        all_records(EXAMPLE), answers_for(EXAMPLE, drop=("_dmarc.example.org.", "TXT"))
    )
    bad = [(f.record.name, f.status) for f in findings if f.status != "ok"]
    assert bad == [("_dmarc.example.org.", "missing")]


def test_an_old_dkim_key_or_a_changed_spf_is_wrong_other_txt_does_not_matter() -> None:
    answers = answers_for(EXAMPLE)
    answers["mail._domainkey.example.org.", "TXT"] = ['"v=DKIM1; k=rsa; p=OLDKEY"']
    answers["example.org.", "TXT"] = ['"google-site-verification=abc"', '"v=spf1 a -all"']
    wrong = {f.record.name: f for f in compare(all_records(EXAMPLE), answers) if f.status != "ok"}
    assert set(wrong) == {"mail._domainkey.example.org.", "example.org."}
    assert wrong["example.org."].status == "wrong"
    assert wrong["example.org."].seen == ("v=spf1 a -all",)


def test_the_same_dkim_key_with_other_tags_and_strings_is_ok() -> None:
    answers = answers_for(EXAMPLE)
    key = EXAMPLE.domains[0].dkim[0].public_key
    answers["mail._domainkey.example.org.", "TXT"] = [
        f'"v=DKIM1; h=sha256; k=rsa; " "p={key[:20]}" "{key[20:]}"'  # as opendkim's .txt has it
    ]
    assert {f.status for f in compare(all_records(EXAMPLE), answers)} == {"ok"}
