"""A second spamd that can learn: Bayes on, `--allow-tell`, its database in the test dir.

The session's spamd keeps Bayes off so scores stay exact; `mailglue learn` needs one that
learns, and `sa-learn --dump magic` against the same `bayes_path` shows what it learned.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from .process import chown
from .spamd import SPAMD_USER, Spamd, local_cf


class LearningSpamd(Spamd):
    def __init__(self, root: Path) -> None:
        super().__init__(root, max_children=2, extra_args=("--allow-tell",))
        self.bayes_dir = root / "bayes"

    def configure(self) -> None:
        super().configure()
        self.bayes_dir.mkdir(parents=True, exist_ok=True)
        chown(self.bayes_dir, SPAMD_USER, mode=0o700)
        text = local_cf().replace("use_bayes 0", "use_bayes 1")
        text += f"bayes_path {self.bayes_dir}/bayes\nbayes_file_mode 0770\n"
        (self.site_dir / "local.cf").write_text(text)

    def learned(self) -> tuple[int, int]:
        """(spam, ham) counts of the Bayes database, from `sa-learn --dump magic`."""
        res = subprocess.run(
            ["sa-learn", f"--siteconfigpath={self.site_dir}", "--dump", "magic"],
            capture_output=True,
            text=True,
            check=False,
        )
        counts = dict.fromkeys(("nspam", "nham"), 0)
        for name in counts:
            m = re.search(rf"^0\.000\s+0\s+(\d+)\s+0\s+non-token data: {name}$", res.stdout, re.M)
            if m:
                counts[name] = int(m.group(1))
        return counts["nspam"], counts["nham"]
