"""Sender authentication of incoming mail: SPF, DKIM and DMARC, and the header that says so."""
