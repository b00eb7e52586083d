#!/usr/bin/env bash
# `make down`: stop every daemon `make up` started. Configuration and mail stay in place;
# `make up` starts them again. (Under systemd, mta-sts-daemon runs as Debian's
# postfix-mta-sts-resolver unit and php-fpm as php8.2-fpm.)
set -euo pipefail

programs=(postfix mta-sts-daemon postfix-mta-sts-resolver nginx mailman3-web mailman3 php-fpm php8.2-fpm opendkim opendkim-ed25519 fail2ban mailglue-policy mailglue-milter mailglue-learn mailglue-quota cyrus saslauthd clamd freshclam spamd slapd unbound cron rsyslog)

# The resolver role pointed /etc/resolv.conf at unbound, which stops below: give the host back
# the name servers it had before (apt needs them); `make up` points it at unbound again.
bash "$(dirname "$0")/host-dns.sh" --always

if [[ -d /run/systemd/system ]]; then
  for p in "${programs[@]}"; do
    if systemctl cat "$p.service" >/dev/null 2>&1; then
      systemctl stop "$p.service" && echo "down: stopped $p"
    fi
  done
  exit 0
fi

conf=/etc/supervisor/supervisord.conf
if ! supervisorctl -c "$conf" pid >/dev/null 2>&1; then
  echo "down: supervisord is not running; nothing to stop"
  exit 0
fi
# Stop the programs in order (mail intake first), then supervisord itself, which the
# playbook started.
for p in "${programs[@]}"; do
  if [[ -f /etc/supervisor/conf.d/$p.conf ]]; then
    supervisorctl -c "$conf" stop "$p" || true
  fi
done
pid=$(supervisorctl -c "$conf" pid)
supervisorctl -c "$conf" shutdown >/dev/null
for _ in $(seq 1 30); do
  kill -0 "$pid" 2>/dev/null || break
  # A dead child lingers as a zombie for a moment here; the socket going away is what counts.
  [[ -S /var/run/supervisor.sock ]] || break
  sleep 1
done
echo "down: supervisord stopped"
