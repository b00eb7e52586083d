"""A small client for Mailman 3's REST API (version 3.1): what `mailglue lists` (lists and
members) and the policy service (who is on a members-only list) need, no more.

The standard library only (urllib, Basic auth sent up front). The calls and answers are
Mailman 3.3.8's (mailman/rest/domains.py, lists.py, members.py, listconf.py), checked
against Debian's mailman3 in tests/integration/test_lists_sync.py:

- `GET /domains`, `POST /domains` (mail_host) -> 201;
- `GET /lists` (entries carry `fqdn_listname`, `list_id`), `POST /lists` (fqdn_listname) -> 201;
- `GET /lists/{list_id}/roster/{owner|moderator|member}` (entries carry `email`, lower case);
- `POST /members` (list_id, subscriber, role; for a member pre_verified, pre_confirmed,
  pre_approved) -> 201 added; 202 a confirmation or approval is still pending; 409 already a
  member or a request pending; 400 "… is already an owner of …" for owners and moderators;
- `GET` and `PATCH /lists/{list_id}/config` (form fields, e.g. default_nonmember_action);
- `acceptable_aliases` in that config: GET gives a sorted list of lower-case strings; PATCH
  sets the whole set (Mailman clears it, then adds each value, lower-cased; a value repeated
  is stored twice): the field once per alias. An empty list would send no field at all, a
  no-op (204), so the empty set is sent as one empty value. A value that is neither an
  address (`@`) nor a pattern (`^…`) is a 400 *after* the clear, which Mailman keeps: send
  only aliases Mailman already has and list addresses.

Every failure is one `MailmanError` naming the method, URL, status and Mailman's reason; the
password travels only in the Authorization header and is in no message.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from milters.common.configkit import ConfigReader
from milters.common.secrets import Secret, read_secret

API_VERSION = "3.1"


class MailmanError(Exception):
    """Mailman unreachable (status None) or an HTTP error answer."""

    def __init__(self, method: str, url: str, status: int | None, reason: str) -> None:
        self.method = method
        self.url = url
        self.status = status
        self.reason = reason
        what = "" if status is None else f"HTTP {status}: "
        super().__init__(f"{method} {url}: {what}{reason}")

    @property
    def fatal(self) -> bool:
        """No further call can succeed: Mailman is down, refuses our login, or is broken."""
        return self.status is None or self.status in (401, 403) or self.status >= 500


class Joined(Enum):
    """What came of a subscription request."""

    ADDED = "added"
    PENDING = "pending"  # Mailman waits for a confirmation or an approval
    ALREADY = "already"  # someone added them in the meantime


@dataclass(frozen=True)
class MailmanApi:
    rest_url: str = "http://127.0.0.1:8001"
    user: str = "restadmin"
    password: Secret | None = None
    timeout: float = 30.0


def read_mailman(reader: ConfigReader) -> MailmanApi:
    """A `mailman:` section: where the REST API is and the admin login it wants."""
    d = MailmanApi()
    url = reader.text("rest_url", d.rest_url)
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        reader.problem("rest_url", f"must be an http:// or https:// URL, got {url!r}")
    elif parts.username is not None or parts.password is not None:
        reader.problem("rest_url", "must not hold a user or password (use user, password_file)")
    elif parts.path not in ("", "/") or parts.query or parts.fragment:
        reader.problem(
            "rest_url", f"must be the server's base URL, without the API version; got {url!r}"
        )
    user = reader.text("user", d.user)
    password = read_secret(reader, "password", "password_file")
    if password is None and not reader.has("password") and not reader.has("password_file"):
        reader.problem("password_file", "is required (the REST API's admin_pass)")
    timeout = reader.seconds("timeout", d.timeout, minimum=1, maximum=600)
    reader.finish()
    return MailmanApi(url.rstrip("/"), user, password, timeout)


@dataclass(frozen=True)
class MailingList:
    fqdn_listname: str
    list_id: str


class MailmanRest:
    """One Mailman's REST API; each method is one HTTP request."""

    def __init__(self, base_url: str, user: str, password: Secret, timeout: float = 30) -> None:
        self.base = f"{base_url.rstrip('/')}/{API_VERSION}"
        self.timeout = timeout
        token = base64.b64encode(f"{user}:{password.reveal()}".encode()).decode("ascii")
        self._authorization = f"Basic {token}"

    # --- reading -----------------------------------------------------------------------------

    def domains(self) -> set[str]:
        return {str(e["mail_host"]).lower() for e in self._entries("domains")}

    def lists(self) -> list[MailingList]:
        return [
            MailingList(str(e["fqdn_listname"]), str(e["list_id"])) for e in self._entries("lists")
        ]

    def roster(self, list_id: str, role: str) -> set[str]:
        """The addresses holding `role` on the list, lower case."""
        return {str(e["email"]).lower() for e in self._entries(f"lists/{list_id}/roster/{role}")}

    def config(self, list_id: str) -> dict[str, Any]:
        _, body = self._call("GET", f"lists/{list_id}/config")
        return body if isinstance(body, dict) else {}

    # --- changing ----------------------------------------------------------------------------

    def create_domain(self, mail_host: str) -> None:
        self._call("POST", "domains", {"mail_host": mail_host})

    def create_list(self, fqdn_listname: str) -> None:
        self._call("POST", "lists", {"fqdn_listname": fqdn_listname})

    def subscribe(self, list_id: str, address: str, role: str, *, welcome: bool = True) -> Joined:
        """Owners and moderators join at once; members are pre-verified, pre-confirmed and
        pre-approved, and get the list's welcome message unless `welcome` is false."""
        form = {"list_id": list_id, "subscriber": address, "role": role}
        if role == "member":
            form |= {"pre_verified": "true", "pre_confirmed": "true", "pre_approved": "true"}
            if not welcome:
                form["send_welcome_message"] = "false"
        try:
            status, _ = self._call("POST", "members", form)
        except MailmanError as exc:
            if exc.status == 409:
                return Joined.PENDING if "pending" in exc.reason.lower() else Joined.ALREADY
            if exc.status == 400 and " is already a" in exc.reason:
                return Joined.ALREADY
            raise
        return Joined.PENDING if status == 202 else Joined.ADDED

    def configure(self, list_id: str, values: dict[str, str]) -> None:
        self._call("PATCH", f"lists/{list_id}/config", values)

    def set_acceptable_aliases(self, list_id: str, aliases: Iterable[str]) -> None:
        """Make the list's acceptable aliases exactly `aliases` (Mailman replaces the whole
        set: pass the ones to keep too). Duplicates, compared without case, are sent once."""
        unique = list(dict.fromkeys(a.lower() for a in aliases))
        self._call("PATCH", f"lists/{list_id}/config", {"acceptable_aliases": unique or ""})

    # --- HTTP --------------------------------------------------------------------------------

    def _entries(self, path: str) -> list[dict[str, Any]]:
        """A collection's entries (Mailman sends them all when no page is asked for)."""
        _, body = self._call("GET", path)
        entries = body.get("entries", []) if isinstance(body, dict) else []
        return [e for e in entries if isinstance(e, dict)]

    def _call(
        self, method: str, path: str, form: Mapping[str, str | list[str]] | None = None
    ) -> tuple[int, Any]:
        """One request; a form field with a list value is sent once per item."""
        url = f"{self.base}/{path}"
        data = (
            urllib.parse.urlencode(form, doseq=True).encode("utf-8") if form is not None else None
        )
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Authorization", self._authorization)
        request.add_header("Accept", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                status, raw = int(response.status), response.read()
        except urllib.error.HTTPError as exc:
            raise MailmanError(method, url, exc.code, _reason(exc)) from None
        except urllib.error.URLError as exc:
            raise MailmanError(method, url, None, str(exc.reason)) from None
        except (OSError, ValueError) as exc:  # timeouts, resets, a malformed answer
            raise MailmanError(method, url, None, str(exc) or type(exc).__name__) from None
        if not raw:
            return status, None
        try:
            return status, json.loads(raw)
        except ValueError:
            raise MailmanError(method, url, status, "answer is not JSON") from None


def _reason(exc: urllib.error.HTTPError) -> str:
    """Mailman's own words for an error (`description`, else `title`), else the HTTP reason."""
    try:
        raw = exc.read()
    except OSError:
        raw = b""
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = None
    if isinstance(body, dict):
        text = body.get("description") or body.get("title")
        if text:
            return str(text)[:300]
    return (raw.decode("utf-8", "replace").strip() or str(exc.reason))[:300]
