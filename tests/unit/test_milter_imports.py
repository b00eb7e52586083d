"""What importing the scan milter loads: its memory is a target of issue 17, so a library the
deployed milter does not use by default must not be loaded at import."""

from __future__ import annotations

import subprocess
import sys


def loaded_after_import(module: str) -> set[str]:
    code = f"import sys, {module}; print('\\n'.join(sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(done.stdout.split())


def test_prometheus_client_is_loaded_only_when_metrics_are_on() -> None:
    modules = loaded_after_import("milters.scan.daemon")
    assert "milters.scan.daemon" in modules
    assert not {m for m in modules if m.split(".")[0] == "prometheus_client"}
