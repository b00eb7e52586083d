#!/usr/bin/env bash
# Installs the Debian packages mailglue's daemons and tests need (Chromium and its driver:
# the webmail tests drive a real browser; PostgreSQL: they run webmail on it too; NSD:
# `mailglue dns --check` asks a real name server; Mailman: the lists tests run its core;
# sa-compile and re2c: spamd's body rules
# compiled to native code, as deployed; libpython3.11-testsuite: CPython's email test messages,
# part of the corpus on which tuned and untuned spamd must agree; unbound and ldnsutils: the
# DANE test signs a zone with ldns-signzone and validates it with unbound, the resolver the
# `resolver` role deploys; postfix-mta-sts-resolver: the outbound MTA-STS test runs the same
# mta-sts-daemon the postfix role deploys; nftables: the firewall role's rules are checked
# with `nft -c`).
# Non-interactive and idempotent: a second run installs nothing.
set -euo pipefail

packages=(
  postfix cyrus-imapd cyrus-admin cyrus-clients sasl2-bin
  spamd spamassassin spamc sa-compile re2c clamav-daemon clamav-testfiles
  slapd ldap-utils libmilter-dev libldap2-dev libsasl2-dev swaks
  python3-dev python3-venv gcc make supervisor openssl
  chromium chromium-driver postgresql nsd mailman3 dbconfig-sqlite3 libpython3.11-testsuite
  unbound ldnsutils postfix-mta-sts-resolver nftables
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
if ((${#missing[@]} == 0)); then
  echo "debian packages: all present"
  exit 0
fi

echo "debian packages: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
debconf-set-selections <<'SEL'
postfix postfix/main_mailer_type select No configuration
postfix postfix/mailname string localhost
slapd slapd/domain string example.org
slapd shared/organization string mailglue
slapd slapd/password1 password mailglue-install-only
slapd slapd/password2 password mailglue-install-only
slapd slapd/no_configuration boolean false
mailman3 mailman3/dbconfig-install boolean true
mailman3 mailman3/database-type select sqlite3
SEL
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
