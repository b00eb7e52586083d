#!/usr/bin/python3
"""Keep a salted SHA-1 ({SSHA}) hash of a secret in a file, re-hashed only when the secret changes."""

from __future__ import annotations

DOCUMENTATION = r"""
module: ssha_file
short_description: Hash a secret once into a file ({SSHA}), keep it while the secret matches
options:
  path: {type: path, required: true, description: File holding the hash.}
  secret: {type: str, required: true, no_log: true, description: The plain secret.}
extends_documentation_fragment: [files]
"""

import base64
import hashlib
import os

from ansible.module_utils.basic import AnsibleModule


def matches(stored, secret):
    if not stored.startswith("{SSHA}"):
        return False
    try:
        raw = base64.b64decode(stored[6:])
    except ValueError:
        return False
    digest, salt = raw[:20], raw[20:]
    return hashlib.sha1(secret.encode() + salt).digest() == digest


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            secret=dict(type="str", required=True, no_log=True),
        ),
        supports_check_mode=True,
        add_file_common_args=True,
    )
    path, secret = module.params["path"], module.params["secret"]
    stored = ""
    if os.path.exists(path):
        with open(path, encoding="ascii") as handle:
            stored = handle.read().strip()
    changed = not matches(stored, secret)
    value = stored
    if changed:
        salt = os.urandom(8)
        value = "{SSHA}" + base64.b64encode(hashlib.sha1(secret.encode() + salt).digest() + salt).decode()
        if not module.check_mode:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="ascii") as handle:
                handle.write(value + "\n")
    file_args = module.load_file_common_arguments(module.params)
    if not module.check_mode or os.path.exists(path):
        changed = module.set_fs_attributes_if_different(file_args, changed)
    module.exit_json(changed=changed, hash=value)


if __name__ == "__main__":
    main()
