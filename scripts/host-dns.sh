#!/usr/bin/env bash
# Gives this host back the name servers it had before the resolver role pointed
# /etc/resolv.conf at unbound on loopback, when that unbound is not there to answer.
#
# Under systemd unbound starts at boot. Here a machine's processes can end without
# `make down` (a session that stops, a reboot without supervisor): /etc/resolv.conf would
# name a resolver that no longer runs, and apt and pip, which `make` runs first, could not
# resolve a name. `make up` points the host at unbound again once unbound answers.
#
#   host-dns.sh          restore only if nothing answers on the resolver's address
#   host-dns.sh --always restore (`make down`, which is stopping unbound)
#
# RESOLV_CONF, UPSTREAM_RESOLV_CONF and RESOLVER_PORT exist for the tests.
set -euo pipefail

resolv_conf=${RESOLV_CONF:-/etc/resolv.conf}
upstream=${UPSTREAM_RESOLV_CONF:-/etc/unbound/upstream-resolv.conf}
port=${RESOLVER_PORT:-53}

# Only a file the resolver role wrote, and only with the copy it kept of the one before.
grep -q 'resolver role' "$resolv_conf" 2>/dev/null || exit 0
[[ -s $upstream ]] || exit 0

if [[ ${1:-} != --always ]]; then
  address=$(sed -n 's/^[[:space:]]*nameserver[[:space:]]\+\([^[:space:]]\+\).*/\1/p' "$resolv_conf" | head -n 1)
  # unbound answers DNS over TCP too: a connection that opens means it is running.
  if [[ -n $address ]] && timeout 3 bash -c "exec 3<>/dev/tcp/$address/$port" 2>/dev/null; then
    exit 0
  fi
  echo "host-dns: nothing answers on $address port $port, which $resolv_conf names" >&2
fi
cat "$upstream" >"$resolv_conf"
echo "host-dns: $resolv_conf names the resolvers from before the deploy again ($upstream)"
