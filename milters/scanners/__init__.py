"""Clients of the scanning daemons: spamd (`spamc` checks, `spamtell` learns) and clamd."""
