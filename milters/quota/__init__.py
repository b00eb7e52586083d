"""Mailbox quotas: the LDAP attribute `mailQuotaKiB` (or the inventory's default) copied into
Cyrus, which enforces it (LMTP and RCPT-time 452 4.2.2, IMAP APPEND, quota warnings)."""
