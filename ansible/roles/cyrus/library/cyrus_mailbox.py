#!/usr/bin/python3
"""Ensure a Cyrus mailbox exists with exactly the given ACL, over IMAPS as a Cyrus admin."""

from __future__ import annotations

DOCUMENTATION = r"""
module: cyrus_mailbox
short_description: Ensure a Cyrus mailbox and its ACL (IMAP CREATE/SETACL/DELETEACL as an admin)
options:
  name: {type: str, required: true, description: Mailbox name (e.g. LearnSpam, user.alice).}
  acl: {type: dict, required: true, description: Identifier to rights; others are removed.}
  admin_user: {type: str, required: true, description: A Cyrus admin.}
  admin_password: {type: str, required: true, no_log: true, description: Its password.}
  host: {type: str, default: 127.0.0.1, description: IMAPS host.}
  port: {type: int, default: 993, description: IMAPS port.}
"""

import imaplib
import re
import ssl
import time

from ansible.module_utils.basic import AnsibleModule


def quote(text):
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_acl(data):
    # * ACL "LearnSpam" anyone lip cyrus lrswipkxtecdan
    line = b" ".join(d for d in data if isinstance(d, bytes)).decode()
    tokens = re.findall(r'"(?:[^"\\]|\\.)*"|\S+', line)
    pairs = tokens[1:]
    return {pairs[i].strip('"'): pairs[i + 1].strip('"') for i in range(0, len(pairs) - 1, 2)}


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            acl=dict(type="dict", required=True),
            admin_user=dict(type="str", required=True),
            admin_password=dict(type="str", required=True, no_log=True),
            host=dict(type="str", default="127.0.0.1"),
            port=dict(type="int", default=993),
        ),
        supports_check_mode=True,
    )
    p = module.params
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    def cannot(msg):
        # In check mode nothing was started or restarted: report what would be done.
        if module.check_mode:
            module.warn(f"{msg}; assuming {p['name']} would be created")
            module.exit_json(changed=True, actions=[f"CREATE {p['name']}"])
        module.fail_json(msg=msg)

    last = None
    for _ in range(3 if module.check_mode else 30):
        try:
            imap = imaplib.IMAP4_SSL(p["host"], p["port"], ssl_context=context, timeout=10)
            break
        except OSError as exc:
            last = exc
            time.sleep(1)
    else:
        cannot(f"cannot reach IMAPS {p['host']}:{p['port']}: {last}")
    try:
        imap.login(p["admin_user"], p["admin_password"])
    except imaplib.IMAP4.error as exc:
        cannot(f"admin login failed: {exc}")
    mailbox = quote(p["name"])
    status, data = imap.list('""', mailbox)
    exists = status == "OK" and any(d for d in data if d)
    want = {k: str(v) for k, v in p["acl"].items()}
    have = {}
    if exists:
        status, data = imap.getacl(mailbox)
        if status != "OK":
            module.fail_json(msg=f"GETACL {p['name']} failed: {data}")
        have = parse_acl(data)
    changes = []
    if not exists:
        changes.append(f"CREATE {p['name']}")
    for ident, rights in want.items():
        if sorted(have.get(ident, "")) != sorted(rights):
            changes.append(f"SETACL {p['name']} {ident} {rights}")
    for ident in have:
        if ident not in want:
            changes.append(f"DELETEACL {p['name']} {ident}")
    if changes and not module.check_mode:
        if not exists:
            status, data = imap.create(mailbox)
            if status != "OK":
                module.fail_json(msg=f"CREATE {p['name']} failed: {data}")
            status, data = imap.getacl(mailbox)
            have = parse_acl(data) if status == "OK" else {}
        for ident, rights in want.items():
            if sorted(have.get(ident, "")) != sorted(rights):
                status, data = imap.setacl(mailbox, quote(ident), rights)
                if status != "OK":
                    module.fail_json(msg=f"SETACL {ident} failed: {data}")
        for ident in list(have):
            if ident not in want:
                status, data = imap.deleteacl(mailbox, quote(ident))
                if status != "OK":
                    module.fail_json(msg=f"DELETEACL {ident} failed: {data}")
    imap.logout()
    module.exit_json(
        changed=bool(changes),
        actions=changes,
        diff={"before": {"exists": exists, "acl": have}, "after": {"exists": True, "acl": want}},
    )


if __name__ == "__main__":
    main()
