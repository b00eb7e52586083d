"""What every room may use; imports no other room of `milters` (only `lmtp_bridge`)."""
