"""The Postfix policy service: unknown recipients and forged senders refused at RCPT time.

Pure parts (protocol, decide, ratelimit, config) hold the rules; thin shells (directory,
mailbox, server) do the blocking and asynchronous I/O around them.
"""
