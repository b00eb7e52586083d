"""`mailglue dns`: the DNS records an admin publishes for the mail domains (records.py builds
them from the deployment's facts, config.py reads dns.yaml, command.py prints them)."""
