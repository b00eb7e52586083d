#!/usr/bin/python3
"""Ensure one LDAP entry exists with the given attribute values, through ldap-utils.

Talks to slapd over ldapi:/// as root (SASL EXTERNAL), so no admin password is needed on the
host. Only the attributes named are compared and replaced; others are left alone. A password
is checked by binding with it and replaced (salted SHA-1) only when the bind fails, so it is
not re-salted on every run.

With `password_record`, the password is one its owner may change (a member's, in webmail):
it is set when the entry is made and again only when `password` itself changes (an admin's
reset), never because the entry's password no longer matches. The record file keeps, per
entry, a salted hash of the value last set, so no password is stored in clear.
"""

from __future__ import annotations

DOCUMENTATION = r"""
module: ldap_entry
short_description: Ensure an LDAP entry and some of its attributes, via ldapi and ldap-utils
options:
  dn: {type: str, required: true, description: Distinguished name.}
  attributes: {type: dict, default: {}, description: Attribute name to value or list of values.}
  password: {type: str, no_log: true, description: Plain password for userPassword.}
  password_record:
    type: path
    description: >-
      Root-only JSON file of salted hashes of the passwords this module set. When given, the
      password is set only when the entry is made or when C(password) differs from the one
      recorded, so a password the entry's owner changed stays.
  state: {type: str, choices: [present, absent], default: present, description: Wanted state.}
  uri: {type: str, default: "ldapi:///", description: Where slapd listens for root.}
"""

import base64
import hashlib
import hmac
import json
import os
import shutil
import subprocess
import tempfile

from ansible.module_utils.basic import AnsibleModule

AUTH = ["-Y", "EXTERNAL", "-Q"]


def values(value):
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def parse_ldif(text):
    entry = {}
    for line in text.splitlines():
        if not line or line.startswith("#") or line.startswith("dn:"):
            continue
        if ":: " in line:
            name, raw = line.split(":: ", 1)
            value = base64.b64decode(raw).decode("utf-8", "replace")
        elif ": " in line:
            name, value = line.split(": ", 1)
        else:
            continue
        entry.setdefault(name.lower(), []).append(value)
    return entry


def ssha(password):
    salt = os.urandom(8)
    digest = hashlib.sha1(password.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


RECORD_ITERATIONS = 100_000


def record_hash(password, salt=None):
    """PBKDF2-SHA256 of a password, as the record file keeps it."""
    salt = os.urandom(16) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, RECORD_ITERATIONS)
    return "pbkdf2-sha256$%d$%s$%s" % (RECORD_ITERATIONS, base64.b64encode(salt).decode(),
                                       base64.b64encode(digest).decode())


def recorded_is(recorded, password):
    """Whether the record holds this password (False for a missing or unreadable record)."""
    try:
        scheme, iterations, salt, digest = recorded.split("$")
        if scheme != "pbkdf2-sha256":
            return False
        again = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt), int(iterations))
    except (AttributeError, ValueError):
        return False
    return hmac.compare_digest(base64.b64encode(again).decode(), digest)


def read_record(path):
    try:
        with open(path, encoding="utf-8") as handle:
            record = json.load(handle)
    except FileNotFoundError:
        return {}
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    return record


def write_record(path, record):
    """Atomically, readable by root only."""
    os.makedirs(os.path.dirname(path) or ".", mode=0o750, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".ldap-passwords-")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(record, handle, indent=1, sort_keys=True)
        handle.write("\n")
    os.chmod(temporary, 0o600)
    os.replace(temporary, path)


def same(name, have, want):
    if name.lower() == "objectclass":
        return {v.lower() for v in have} == {v.lower() for v in want}
    return sorted(have) == sorted(want)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            dn=dict(type="str", required=True),
            attributes=dict(type="dict", default={}),
            password=dict(type="str", no_log=True),
            password_record=dict(type="path"),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            uri=dict(type="str", default="ldapi:///"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    dn, uri = p["dn"], p["uri"]

    def run(args, data=None, check=True):
        try:
            proc = subprocess.run(args, input=data, capture_output=True, text=True)
        except FileNotFoundError:
            module.fail_json(msg=f"{args[0]} not found (ldap-utils is not installed) for {dn}")
        if check and proc.returncode != 0:
            module.fail_json(msg=f"{args[0]} failed for {dn}: {proc.stderr.strip()}", rc=proc.returncode)
        return proc

    if module.check_mode and shutil.which("ldapsearch") is None:
        # --check on a host the play has not yet set up: no ldap-utils, no slapd. The entry
        # would be created by the real run; say so instead of failing the whole check.
        module.exit_json(changed=True, dn=dn, msg="slapd not installed yet: the entry would be created",
                         diff={"before": {}, "after": {"dn": dn}})
    found = run(
        ["ldapsearch", "-LLL", "-o", "ldif-wrap=no", "-H", uri, *AUTH, "-s", "base", "-b", dn, "*"],
        check=False,
    )
    if module.check_mode and found.returncode == 255:  # installed by this run, not started yet
        module.exit_json(changed=True, dn=dn, msg="slapd not running yet: the entry would be created",
                         diff={"before": {}, "after": {"dn": dn}})
    if found.returncode not in (0, 32):
        module.fail_json(msg=f"ldapsearch failed for {dn}: {found.stderr.strip()}")
    exists = found.returncode == 0 and found.stdout.strip() != ""
    current = parse_ldif(found.stdout) if exists else {}
    before = {k: v for k, v in current.items() if k != "userpassword"}

    record_path = p["password_record"]
    record = {}
    if record_path:
        try:
            record = read_record(record_path)
        except (OSError, ValueError) as exc:
            module.fail_json(msg=f"{record_path}: cannot read the password record: {exc}")

    if p["state"] == "absent":
        forget = dn in record
        if not module.check_mode:
            if exists:
                run(["ldapdelete", "-H", uri, *AUTH, dn])
            if forget:
                del record[dn]
                write_record(record_path, record)
        module.exit_json(changed=exists or forget,
                         diff={"before": {"dn": dn, **before} if exists else {}, "after": {}})

    want = {name: values(v) for name, v in p["attributes"].items()}
    changes = {}
    for name, wanted in want.items():
        if not same(name, current.get(name.lower(), []), wanted):
            changes[name] = wanted
    password_changed = False
    recorded = None  # what the record is to hold for this entry, when that changes
    if p["password"]:
        if not exists or "userpassword" not in current:
            password_changed = True
        elif record_path:
            if dn not in record:
                # Made before records were kept: its owner may have changed the password since,
                # so it stays; from now on only a new value in the inventory replaces it.
                recorded = record_hash(p["password"])
            elif not recorded_is(record[dn], p["password"]):
                password_changed = True
        else:
            with tempfile.NamedTemporaryFile("w", delete=True) as secret:
                os.chmod(secret.name, 0o600)
                secret.write(p["password"])
                secret.flush()
                bind = run(["ldapwhoami", "-x", "-H", uri, "-D", dn, "-y", secret.name], check=False)
            password_changed = bind.returncode != 0

    if password_changed and record_path:
        recorded = record_hash(p["password"])
    changed = not exists or bool(changes) or password_changed or recorded is not None
    after = dict(before)
    after.update({k.lower(): v for k, v in want.items()})
    if password_changed:
        after["userpassword"] = ["(changed, hidden)"]
    diff = {"before": {"dn": dn, **before} if exists else {}, "after": {"dn": dn, **after}}

    if changed and not module.check_mode:
        lines = []
        if not exists:
            lines.append(f"dn: {dn}")
            lines.append("changetype: add")
            for name, wanted in want.items():
                lines.extend(f"{name}: {v}" for v in wanted)
            if p["password"]:
                lines.append(f"userPassword: {ssha(p['password'])}")
        else:
            lines.append(f"dn: {dn}")
            lines.append("changetype: modify")
            for name, wanted in changes.items():
                lines.append(f"replace: {name}")
                lines.extend(f"{name}: {v}" for v in wanted)
                lines.append("-")
            if password_changed:
                lines.append("replace: userPassword")
                lines.append(f"userPassword: {ssha(p['password'])}")
                lines.append("-")
        if len(lines) > 2:  # more than "dn:" and "changetype:": something for slapd
            run(["ldapmodify", "-H", uri, *AUTH], data="\n".join(lines) + "\n")
        if recorded is not None:  # after slapd took the password, so a failure leaves no record
            record[dn] = recorded
            write_record(record_path, record)

    module.exit_json(changed=changed, dn=dn, changed_attributes=sorted(changes), password_changed=password_changed,
                     diff=diff)


if __name__ == "__main__":
    main()
