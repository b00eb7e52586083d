"""Operations commands that read the logs (`trace`, `tail`) or rescan a message (`replay`);
none of them loads the milter session."""
