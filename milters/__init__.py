"""mailglue's daemons and tools, one room (subpackage) per role:

- `common`: what every room may use: configuration kit, JSON event log, daemon lifecycle,
  sockets, LDAP settings and the user directory, secrets, mail addresses, Prometheus plumbing;
- `scanners`: the spamd (check and learn) and clamd clients;
- `auth`: SPF, DKIM and DMARC of incoming mail, the `Authentication-Results` header, and the
  DMARC action (pure results and decision, DNS-asking checks), used by the scan milter;
- `scan`: the scan milter: pure verdict, headers, shadow mode, its typed transaction event,
  session callbacks, spool, LMTP delivery, daemon, metrics, config;
- `policy`: the Postfix policy service;
- `ops`: reading the logs back: `trace`, `tail`, and `replay` of one message;
- `learn`: teaching spamd from the LearnSpam folder;
- `quota`: copying each member's mailbox quota from LDAP into Cyrus;
- `dns`: the DNS records an admin publishes for the mail domains;
- `lists`: Mailman's lists, owners and first members from the inventory (REST, additive).

`cli` parses `mailglue SUBCOMMAND` and dispatches. The rule (tests/unit/test_rooms.py):
`common` imports no other room; `auth` imports only `common` (and `lmtp_bridge`); `scan`
and `policy` share only `common`; `ops`, `learn`,
`quota` and `lists` never load the milter session or pymilter; `lmtp_bridge` imports nothing from
`milters`, and its `Reply` is the one type for an SMTP or LMTP reply everywhere.
"""
