#!/usr/bin/python3
"""Ensure one LDAP entry exists with the given attribute values, through ldap-utils.

Talks to slapd over ldapi:/// as root (SASL EXTERNAL), so no admin password is needed on the
host. Only the attributes named are compared and replaced; others are left alone. A password
is checked by binding with it and replaced (salted SHA-1) only when the bind fails, so it is
not re-salted on every run.
"""

from __future__ import annotations

DOCUMENTATION = r"""
module: ldap_entry
short_description: Ensure an LDAP entry and some of its attributes, via ldapi and ldap-utils
options:
  dn: {type: str, required: true, description: Distinguished name.}
  attributes: {type: dict, default: {}, description: Attribute name to value or list of values.}
  password: {type: str, no_log: true, description: Plain password for userPassword.}
  state: {type: str, choices: [present, absent], default: present, description: Wanted state.}
  uri: {type: str, default: "ldapi:///", description: Where slapd listens for root.}
"""

import base64
import hashlib
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

    if p["state"] == "absent":
        if exists and not module.check_mode:
            run(["ldapdelete", "-H", uri, *AUTH, dn])
        module.exit_json(changed=exists, diff={"before": {"dn": dn, **before} if exists else {}, "after": {}})

    want = {name: values(v) for name, v in p["attributes"].items()}
    changes = {}
    for name, wanted in want.items():
        if not same(name, current.get(name.lower(), []), wanted):
            changes[name] = wanted
    password_changed = False
    if p["password"]:
        if not exists or "userpassword" not in current:
            password_changed = True
        else:
            with tempfile.NamedTemporaryFile("w", delete=True) as secret:
                os.chmod(secret.name, 0o600)
                secret.write(p["password"])
                secret.flush()
                bind = run(["ldapwhoami", "-x", "-H", uri, "-D", dn, "-y", secret.name], check=False)
            password_changed = bind.returncode != 0

    changed = not exists or bool(changes) or password_changed
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
        run(["ldapmodify", "-H", uri, *AUTH], data="\n".join(lines) + "\n")

    module.exit_json(changed=changed, dn=dn, changed_attributes=sorted(changes), password_changed=password_changed,
                     diff=diff)


if __name__ == "__main__":
    main()
