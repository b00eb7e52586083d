"""`mailglue learn`: teach spamd from the messages users put in the shared LearnSpam folder.

Which way to teach comes from OUR headers, never from a guess: the milter removes every
incoming X-Spam-* header and adds its own, so in a stored message they are ours.
- tagged (`X-Spam-Flag: YES`, or `X-Spam-Status: Yes, …`): the user says it is not spam → ham;
- scored and not tagged (`X-Spam-Status: No, …`): the user says we missed it → spam;
- no X-Spam-Status (not scored by us, or forwarded as a new message): reported and left in
  the folder for a human.

Every spamd in `spamd.backends` is taught: each scanner keeps a Bayes database of its own, and
the milter may score with any of them. A message leaves the folder only after each confirmed it
learned it (`DidSet: local`); while one is down it stays, and the next run teaches it again
(a spamd that has it already confirms it once more, see `spamtell.teach`). So does a run
interrupted between the two. Messages already flagged \\Deleted by an interrupted run were
confirmed before, and are only expunged.
"""

from __future__ import annotations

import imaplib
from collections import Counter
from dataclasses import dataclass
from typing import Any

from milters.common.imap import connect, imap_ok, imap_quoted
from milters.common.jsonlog import EventLog
from milters.learn.config import LearnConfig
from milters.ops.replay import split_message
from milters.scan.headers import is_owned
from milters.scanners.spamc import SpamdError
from milters.scanners.spamtell import MessageClass, Taught, teach


def classify(headers: list[tuple[str, str]]) -> MessageClass | None:
    """What the user's report means, from the headers the milter added; None: not ours."""
    values = {name.lower(): value.strip() for name, value in reversed(headers)}
    if values.get("x-spam-flag", "").upper() == "YES":
        return MessageClass.HAM
    status = values.get("x-spam-status")
    if status is None:
        return None
    if status.lower().startswith("yes"):
        return MessageClass.HAM
    if status.lower().startswith("no"):
        return MessageClass.SPAM
    return None


def header_value(headers: list[tuple[str, str]], name: str) -> str | None:
    return next((v.strip() for n, v in headers if n.lower() == name), None)


def learnable_copy(raw: bytes) -> bytes:
    """The message as spamd first saw it: without our headers, so Bayes learns the mail,
    not our verdict on it."""
    kept: list[bytes] = []
    skipping = False
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = raw.partition(b"\n\n")
    newline = b"\r\n" if b"\r\n" in head else b"\n"
    for line in head.split(newline):
        if line[:1] in (b" ", b"\t"):
            if not skipping:
                kept.append(line)
            continue
        name = line.split(b":", 1)[0].decode("ascii", "replace")
        skipping = is_owned(name)
        if not skipping:
            kept.append(line)
    return newline.join(kept) + sep + body


@dataclass
class Summary:
    counts: Counter[str]

    def line(self) -> str:
        parts = [f"{n} {k}" for k, n in sorted(self.counts.items())]
        return "learn: " + (", ".join(parts) if parts else "LearnSpam folder is empty")


class Learner:
    """One run over the folder. The IMAP session and spamd are the only I/O."""

    def __init__(self, config: LearnConfig, log: EventLog) -> None:
        self.config = config
        self.log = log
        self.counts: Counter[str] = Counter()

    def run(self) -> Summary:
        imap = connect(self.config.imap)
        try:
            folder = self.config.imap.folder
            imap_ok(imap.select(imap_quoted(folder)), f"SELECT {folder}")
            self._expunge_confirmed(imap)
            uids = imap_ok(imap.uid("SEARCH", "UNDELETED"), "SEARCH")
            for uid in (uids[0].split() if uids and uids[0] else [])[: self.config.max_messages]:
                self._one(imap, uid.decode())
            imap.close()
        finally:
            imap.logout()
        summary = Summary(self.counts)
        self.log.emit("learn_summary", folder=self.config.imap.folder, **dict(self.counts))
        return summary

    def _expunge_confirmed(self, imap: imaplib.IMAP4) -> None:
        """\\Deleted here means spamd confirmed it in an interrupted run: finish the job."""
        found = imap_ok(imap.uid("SEARCH", "DELETED"), "SEARCH DELETED")
        uids = found[0].split() if found and found[0] else []
        if uids:
            imap_ok(imap.expunge(), "EXPUNGE")
            self.counts["expunged_from_earlier_run"] += len(uids)

    def _one(self, imap: imaplib.IMAP4, uid: str) -> None:
        data = imap_ok(imap.uid("FETCH", uid, "(RFC822.SIZE BODY.PEEK[])"), f"FETCH {uid}")
        raw = next((part[1] for part in data if isinstance(part, tuple)), None)
        if raw is None:
            return  # expunged by someone else meanwhile
        message = split_message(raw)
        fields: dict[str, Any] = {
            "uid": int(uid),
            "message_id": header_value(message.headers, "message-id"),
            "spam_status": header_value(message.headers, "x-spam-status"),
        }
        verdict = classify(message.headers)
        if verdict is None:
            self._record("unknown", fields, reason="no X-Spam-Status of ours: left for a human")
            return
        fields["learned_as"] = verdict.value
        if len(raw) > self.config.max_size:
            self._record("too_big", fields, reason=f"{len(raw)} bytes > learn.max_size")
            return
        copy = learnable_copy(raw)
        taught: list[Taught] = []
        failed: list[str] = []
        for backend in self.config.spamd:
            try:
                taught.append(
                    teach(
                        (backend,),
                        copy,
                        verdict,
                        self.config.spamd_timeout,
                        self.config.spamd_user,
                    )
                )
            except (OSError, SpamdError) as exc:
                failed.append(f"{backend}: {exc}")
        if failed:
            reason = f"spamd: {'; '.join(failed)} (left in the folder for the next run)"
            self._record("error", fields, reason=reason)
            return
        self._remove(imap, uid)
        self._record(verdict.value if Taught.LEARNED in taught else "already_learned", fields)

    def _remove(self, imap: imaplib.IMAP4, uid: str) -> None:
        """Out of the folder, now that spamd confirmed: moved, or deleted and expunged."""
        if self.config.after == "move":
            assert self.config.move_to is not None
            imap_ok(imap.uid("COPY", uid, imap_quoted(self.config.move_to)), f"COPY {uid}")
        imap_ok(imap.uid("STORE", uid, "+FLAGS.SILENT", r"(\Deleted)"), f"STORE {uid}")
        if "UIDPLUS" in imap.capabilities:  # else the CLOSE at the end expunges
            imap_ok(imap.uid("EXPUNGE", uid), f"UID EXPUNGE {uid}")

    def _record(self, outcome: str, fields: dict[str, Any], reason: str | None = None) -> None:
        self.counts[outcome] += 1
        self.log.emit("learn", outcome=outcome, reason=reason, **fields)
