"""The scan milter: `verdict`/`shadow`/`headers` decide (pure), `session` holds the pymilter
callbacks, `daemon` the process, `event` the one transaction record it logs."""
