"""The mail role's systemd unit template, rendered as Ansible renders it (trim_blocks).

The sandbox's socket families: a daemon that needs one more (Mailman's postmap calls
getifaddrs, a netlink socket) names it in `address_families`. A first version put it in
a for-loop whose end tag ate the line break, gluing the next directive onto the line.
"""

from __future__ import annotations

from pathlib import Path

import jinja2

TEMPLATE = Path(__file__).parents[2] / "ansible/roles/mail/templates/etc/systemd/system"


def render(program: dict[str, object]) -> list[str]:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE), trim_blocks=True, undefined=jinja2.StrictUndefined
    )
    text = env.get_template("program.service.j2").render(
        mail_program=program, ansible_managed="managed"
    )
    return text.splitlines()


BASE: dict[str, object] = {
    "name": "x",
    "description": "x",
    "command": "/bin/true",
    "read_write_paths": ["/var/x"],
}


def test_extra_socket_families_are_added_on_their_own_line() -> None:
    lines = render({**BASE, "address_families": ["AF_NETLINK"]})
    assert "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK" in lines
    assert "ReadWritePaths=/var/x" in lines


def test_without_extra_families_the_sandbox_allows_unix_and_ip_only() -> None:
    assert "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6" in render(BASE)
