"""Mailing lists on the deployed stack: members post through submission like any mail, and
everyone looks where they would: each member's INBOX over IMAPS, the outside member's MX, the
list's archive page over HTTPS. The single inventory's lists: `staff` (alice, bob and
friend@example.net; owner alice), `all` (staff and bob; owner alice) and the members-only
`board` (alice and bob).
"""

from __future__ import annotations

import base64
import json
import os
import re
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec

from tests.deploy.browser import wait
from tests.deploy.mailuser import (
    SUBMISSION,
    RemoteMx,
    attachments_of,
    dkim_verifies,
    from_outside,
    just_under_the_size_limit,
    person,
    submit,
    token,
    with_attachment,
)
from tests.deploy.stack import DEPLOY_MARKS, EICAR, run_playbook, smoke
from tests.harness.smtp import send

pytestmark = DEPLOY_MARKS


@pytest.fixture(autouse=True)
def lists_deployed(deployed: dict[str, Any]) -> None:
    if not deployed["vars"].get("mail_lists_enabled"):
        pytest.skip("the deployed inventory has no mailing lists (mail_lists_enabled: false)")


STAFF = "staff@example.org"
ALL = "all@example.org"
BOARD = "board@example.org"  # members only
WEB = "https://localhost/lists"


def copies(who: dict[str, str], mark: str) -> int:
    """How many messages in the member's INBOX carry `mark` in the subject, right now."""
    with smoke.imap_login(who["uid"], who["password"]) as imap:
        imap.select("INBOX", readonly=True)
        status, data = imap.search(None, "SUBJECT", f'"{mark}"')
    assert status == "OK", data
    return len(data[0].split()) if data and data[0] else 0


def wait_for_copies(who: dict[str, str], mark: str, timeout: float = 90) -> int:
    """The member's copies once at least one has arrived (Mailman's runners poll its queues)."""
    deadline = time.monotonic() + timeout
    while (found := copies(who, mark)) == 0 and time.monotonic() < deadline:
        time.sleep(1)
    return found


def transactions(mark: str) -> list[dict[str, Any]]:
    """The milter's transaction events of the messages whose Message-ID carries `mark`."""
    log = Path("/var/log/mailglue/milter.log").read_text(encoding="utf-8", errors="replace")
    events = (json.loads(line) for line in log.splitlines() if line.startswith("{"))
    return [
        e for e in events if e.get("event") == "transaction" and mark in str(e.get("message_id"))
    ]


def page(path: str) -> str:
    """A list page as a browser gets it over HTTPS (the stack's certificate is self-signed)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with urllib.request.urlopen(f"{WEB}{path}", context=context, timeout=30) as response:
        body: bytes = response.read()
    return body.decode("utf-8", "replace")


def test_a_members_post_reaches_every_member_once_and_the_archive(
    deployed: dict[str, Any], remote_mx: RemoteMx
) -> None:
    alice, bob = person(deployed, "alice"), person(deployed, "bob")
    mark = token()
    tx = submit(alice, [STAFF], f"minutes {mark}", "The minutes of today's meeting.\n")
    assert tx.data is not None and tx.data.code == 250, tx
    # The 250 came after Mailman had the post: the milter delivered it to Mailman's LMTP.
    (event,) = transactions(mark)
    (to_list,) = event["recipients"]
    assert to_list["list"] is True and to_list["outcome"] == "delivered", event
    assert wait_for_copies(bob, mark) == 1
    assert wait_for_copies(alice, mark) == 1
    outside = remote_mx.find(mark)
    assert outside is not None, "the outside member got nothing"
    assert dkim_verifies(outside), outside[:3000]  # Mailman's re-send is signed again
    assert re.search(rb"(?m)^List-Id: [^\n]*<staff\.example\.org>", outside), outside[:3000]
    # its archive link names this host's list pages (where a member can open it), not the domain
    host = re.escape(deployed["vars"]["mail_hostname"].encode())
    archived = rb"(?m)^Archived-At:\s+<https://" + host + rb"/lists/hyperkitty/list/staff@"
    assert re.search(archived, outside), outside[:3000]
    # Scanned once, before Mailman took it; the members' copies were not scanned again.
    assert len(transactions(mark)) == 1
    assert "spam" in event and not event["spam"].get("cached"), event


def wait_until_archived(browser: WebDriver, mailing_list: str, mark: str) -> None:
    """Until the list's latest posts, as the logged-in browser sees them, show `mark`."""
    deadline = time.monotonic() + 90
    while True:
        browser.get(f"{WEB}/hyperkitty/list/{mailing_list}/latest")
        if mark in browser.page_source:
            return
        assert time.monotonic() < deadline, browser.page_source[-2000:]
        time.sleep(2)


def test_the_archive_is_for_the_lists_members(deployed: dict[str, Any], browser: WebDriver) -> None:
    """A member logged in with their department password reads staff's archive; a stranger
    on the web gets the login page, not the posts."""
    alice, bob = person(deployed, "alice"), person(deployed, "bob")
    mark = token()
    tx = submit(bob, [STAFF], f"budget {mark}", "The budget for next year.\n")
    assert tx.data is not None and tx.data.code == 250, tx
    assert wait_for_copies(alice, mark) == 1
    lists_login(browser, alice)
    wait_until_archived(browser, STAFF, mark)
    with pytest.raises(urllib.error.HTTPError) as refused:
        page(f"/hyperkitty/list/{STAFF}/latest")
    assert refused.value.code == 403
    assert mark not in refused.value.read().decode("utf-8", "replace")


def test_a_colleague_not_on_the_list_cannot_read_its_archive(
    deployed: dict[str, Any], browser: WebDriver, newcomer: dict[str, str]
) -> None:
    """Logging in with a department password is not enough: the archive is for the list's
    members, so a colleague who is not on staff sees neither the posts nor the thread list."""
    alice, bob = person(deployed, "alice"), person(deployed, "bob")
    mark = token()
    tx = submit(bob, [STAFF], f"salaries {mark}", "The salary review, confidential.\n")
    assert tx.data is not None and tx.data.code == 250, tx
    assert wait_for_copies(alice, mark) == 1
    lists_login(browser, alice)  # the post is in the archive: a member sees it
    wait_until_archived(browser, STAFF, mark)
    browser.delete_all_cookies()
    lists_login(browser, newcomer)
    browser.get(f"{WEB}/hyperkitty/")  # logged in: the index greets them, as any member
    assert newcomer["uid"] in browser.page_source, browser.page_source[-2000:]
    browser.get(f"{WEB}/hyperkitty/list/{STAFF}/latest")
    assert mark not in browser.page_source
    assert "budget" not in browser.page_source and "salaries" not in browser.page_source
    browser.get(f"{WEB}/hyperkitty/search?q={mark}&mlist={STAFF}")
    assert mark not in browser.page_source.replace(f"q={mark}", "").replace(f'value="{mark}"', "")


def mailman(*args: str) -> str:
    """Mailman's own command line, as the admin runs it."""
    done = subprocess.run(
        ["runuser", "-u", "list", "--", "mailman", "-C", "/etc/mailman3/mailman.cfg", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout


def test_a_colleague_joins_a_list_in_postorius_gets_its_posts_and_leaves_again(
    deployed: dict[str, Any], browser: WebDriver, newcomer: dict[str, str]
) -> None:
    """The README's promise to members: log in to the list pages with the department login
    to join or leave a list, no admin needed."""
    bob = person(deployed, "bob")
    form = "form[action$='/lists/staff.example.org/{}'] button[type=submit]"
    try:
        lists_login(browser, newcomer)
        browser.get(f"{WEB}/postorius/lists/staff.example.org/")
        browser.find_element(By.CSS_SELECTOR, form.format("subscribe")).click()
        wait(browser, ec.text_to_be_present_in_element((By.TAG_NAME, "body"), "You are subscribed"))
        joined = f"welcome aboard {token()}"
        tx = submit(bob, [STAFF], joined, "Glad to have you.\n")
        assert tx.data is not None and tx.data.code == 250, tx
        assert wait_for_copies(newcomer, joined.split()[-1]) == 1, "the new member got no copy"

        browser.get(f"{WEB}/postorius/lists/staff.example.org/")
        browser.find_element(By.CSS_SELECTOR, form.format("unsubscribe/")).click()
        wait(browser, ec.text_to_be_present_in_element((By.TAG_NAME, "body"), "unsubscribed"))
        assert newcomer["mail"] not in mailman("members", STAFF)
        left = f"after you left {token()}"
        tx = submit(bob, [STAFF], left, "Bye.\n")
        assert tx.data is not None and tx.data.code == 250, tx
        assert wait_for_copies(bob, left.split()[-1]) == 1  # the post went out
        assert copies(newcomer, left.split()[-1]) == 0, "a member who left still gets posts"
    finally:
        if newcomer["mail"] in mailman("members", STAFF):
            mailman("delmembers", "-l", STAFF, "-m", newcomer["mail"])


def status_of(path: str) -> int:
    """The HTTP status a stranger (no login) gets for a list page."""
    try:
        page(path)
    except urllib.error.HTTPError as refused:
        return refused.code
    return 200


@pytest.mark.playbook
def test_an_archive_made_public_or_private_is_so_as_soon_as_the_playbook_ends(
    deployed: dict[str, Any],
) -> None:
    """The admin switches a list's archive_policy in the inventory and runs the playbook: the
    web sees the archive (or no longer sees it) at once, not after the list's next post, when
    HyperKitty would otherwise copy the setting from Mailman."""
    lists: list[dict[str, Any]] = deployed["vars"]["mail_lists"]
    public = [
        {**spec, "archive_policy": "public"} if spec["name"] == BOARD else spec for spec in lists
    ]
    archive = f"/hyperkitty/list/{BOARD}/latest"
    try:
        run = run_playbook("--tags", "lists", "-e", json.dumps({"mail_lists": public}))
        assert run.returncode == 0, run.stdout[-3000:]
        assert status_of(archive) == 200
    finally:
        run = run_playbook("--tags", "lists")
        assert run.returncode == 0, run.stdout[-3000:]
    assert status_of(archive) == 403


def lists_login(browser: WebDriver, who: dict[str, str]) -> None:
    """Log in to the list pages as a member does, with the department login and password."""
    browser.get(f"{WEB}/accounts/login/")
    wait(browser, ec.visibility_of_element_located((By.ID, "id_login"))).send_keys(who["uid"])
    browser.find_element(By.ID, "id_password").send_keys(who["password"])
    browser.find_element(By.CSS_SELECTOR, "form.login button[type=submit]").click()
    wait(browser, ec.url_contains("/postorius/lists/"))


def test_a_members_post_with_slides_attached_reaches_the_members(deployed: dict[str, Any]) -> None:
    """A post of a few megabytes (slides, a paper) goes out like any other: Mailman's own
    default would hold any post over 40 KB for the owner to approve."""
    alice, bob = person(deployed, "alice"), person(deployed, "bob")
    subject = f"slides {token()}"
    slides = os.urandom(3 * 1024 * 1024)
    raw = with_attachment(bob, STAFF, subject, slides)
    login = (bob["uid"], bob["password"])
    tx = send(SUBMISSION, bob["mail"], [STAFF], raw, login=login)
    assert tx.data is not None and tx.data.code == 250, tx
    assert wait_for_copies(alice, subject.split()[-1]) == 1, "not in alice's INBOX (held?)"
    # Mailman adds its footer as one more part; the file is there, byte for byte
    assert slides in attachments_of(alice, subject)


def test_a_post_as_large_as_any_mail_may_be_reaches_the_members(
    deployed: dict[str, Any], remote_mx: RemoteMx
) -> None:
    """The README promises list posts up to the size of any mail. Mailman's copy is larger
    than the post (its List-* headers, the footer part, Postfix's Received line), and it
    comes back through Postfix's lists port: a post the client could send must not be
    refused there, when the poster already has a 250."""
    alice, bob = person(deployed, "alice"), person(deployed, "bob")
    subject = f"dataset {token()}"
    raw, data = just_under_the_size_limit(bob["mail"], STAFF, subject)
    tx = send(SUBMISSION, bob["mail"], [STAFF], raw, login=(bob["uid"], bob["password"]))
    assert tx.data is not None and tx.data.code == 250, tx
    mark = subject.split()[-1]
    assert wait_for_copies(alice, mark, timeout=240) == 1, "not in alice's INBOX"
    assert data in attachments_of(alice, subject)
    deadline = time.monotonic() + 60
    while remote_mx.find(mark) is None and time.monotonic() < deadline:
        time.sleep(1)
    assert remote_mx.find(mark) is not None, "the outside member got nothing"


def test_the_admins_trace_of_a_post_shows_each_members_delivery(deployed: dict[str, Any]) -> None:
    """`mailglue trace <Message-ID>`, typed as root as the README says, follows the post past
    Mailman: each member's copy by queue id, from Postfix's own log, with its delivery."""
    alice, bob = person(deployed, "alice"), person(deployed, "bob")
    mark = token()
    tx = submit(alice, [STAFF], f"trace me {mark}", "Where did this go?\n")
    assert tx.data is not None and tx.data.code == 250, tx
    assert wait_for_copies(bob, mark) == 1 and wait_for_copies(alice, mark) == 1
    (event,) = transactions(mark)
    deadline = time.monotonic() + 60
    while True:  # Postfix logs `sent` just after Cyrus answered, the IMAP search may be faster
        shown = root_shell(f"mailglue trace '{event['message_id']}'")
        assert shown.returncode == 0, shown.stderr
        sent = {
            m["to"]: m["qid"]
            for m in re.finditer(
                r"(?m)^  member    (?P<qid>\w+) [\d:]+ (?P<to>\S+): sent via lmtp ", shown.stdout
            )
        }
        if {alice["mail"], bob["mail"]} <= set(sent) or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert {alice["mail"], bob["mail"]} <= set(sent), shown.stdout
    headers = re.findall(r"(?m)^  members   (\w+) from Mailman \(<staff-bounces@", shown.stdout)
    for who in (alice, bob):
        qid = sent[who["mail"]]
        assert qid in headers and qid != event["queue_id"], shown.stdout
        # the same queue id delivered that member's copy in Postfix's own words
        delivered = rf"postfix/lmtp\[\d+\]: {qid}: to=<{re.escape(who['mail'])}>, .*status=sent"
        assert re.search(delivered, Path("/var/log/postfix.log").read_text(errors="replace"))


def root_shell(command: str) -> subprocess.CompletedProcess[str]:
    """`command` as an admin types it: a root login shell, nothing of the test's environment."""
    return subprocess.run(
        ["env", "-i", "bash", "-lc", command],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_a_post_to_a_list_in_a_list_reaches_a_member_of_both_once(
    deployed: dict[str, Any],
) -> None:
    """The reference FAQ: bob is on `all` and on `staff`, which is on `all`."""
    alice, bob = person(deployed, "alice"), person(deployed, "bob")
    mark = token()
    tx = submit(bob, [ALL], f"party {mark}", "Friday, 5 pm.\n")
    assert tx.data is not None and tx.data.code == 250, tx
    # alice gets it only through staff: once she has it, both paths to bob have run
    assert wait_for_copies(alice, mark) == 1
    assert wait_for_copies(bob, mark) >= 1
    subprocess.run(["postqueue", "-f"], check=False)
    time.sleep(5)
    assert copies(bob, mark) == 1


def test_spam_or_a_virus_to_a_list_is_refused_and_reaches_nobody(
    deployed: dict[str, Any], remote_mx: RemoteMx
) -> None:
    alice, bob = person(deployed, "alice"), person(deployed, "bob")
    spam, virus = token(), token()
    refused = submit(alice, [STAFF], f"offer {spam}", f"{smoke.GTUBE}\n")
    assert refused.data is not None and refused.data.code == 550, refused
    infected = submit(alice, [STAFF], f"invoice {virus}", f"{EICAR}\n")
    assert infected.data is not None and infected.data.code == 554, infected
    time.sleep(10)
    assert copies(bob, spam) == 0 and copies(bob, virus) == 0
    assert remote_mx.find(spam, timeout=1) is None and remote_mx.find(virus, timeout=1) is None


def test_list_addresses_are_known_and_typos_are_refused_at_rcpt(deployed: dict[str, Any]) -> None:
    mark = token()
    tx = from_outside("someone@example.net", ["staff-request@example.org"], f"help {mark}")
    assert tx.rcpt["staff-request@example.org"].code == 250, tx
    typo = from_outside("someone@example.net", ["stafff@example.org"], f"typo {mark}")
    assert typo.rcpt["stafff@example.org"].code == 550, typo


def test_a_list_made_or_removed_outside_the_playbook_is_known_at_once(
    deployed: dict[str, Any],
) -> None:
    """An owner's new list (Postorius, or `mailman create`) takes mail at once, no playbook
    run; once removed, its address is refused again like any typo."""
    name = f"reading-{token()}@example.org"
    probe = f"probe {token()}"
    try:
        mailman("create", name)
        tx = from_outside("someone@example.net", [name], probe)
        assert tx.rcpt[name].code == 250, tx
    finally:
        mailman("remove", name)
    gone = from_outside("someone@example.net", [name], probe)
    assert gone.rcpt[name].code == 550, gone


def test_a_non_members_post_is_held_not_bounced(deployed: dict[str, Any]) -> None:
    bob = person(deployed, "bob")
    mark = token()
    tx = from_outside("stranger@example.net", [STAFF], f"hello list {mark}")
    assert tx.data is not None and tx.data.code == 250, tx  # Mailman has it
    deadline = time.monotonic() + 60
    while not (mine := [h for h in held(STAFF) if mark in h.get("subject", "")]):
        assert time.monotonic() < deadline, "not held for moderation"
        time.sleep(1)
    assert copies(bob, mark) == 0
    discard_held(STAFF, mine[0]["request_id"])  # each run's held post would pile up otherwise


def discard_held(address: str, request_id: int) -> None:
    """What a moderator's "discard" does, through Mailman's REST API."""
    rest("POST", f"/3.1/lists/{address.replace('@', '.')}/held/{request_id}", b"action=discard")


def held(address: str) -> list[dict[str, Any]]:
    """The list's posts held for moderation, from Mailman's REST API (as Postorius shows them)."""
    entries: list[dict[str, Any]] = json.loads(
        rest("GET", f"/3.1/lists/{address.replace('@', '.')}/held") or b"{}"
    ).get("entries", [])
    return entries


def rest(method: str, path: str, form: bytes | None = None) -> bytes:
    """One call to Mailman's REST API on loopback, as its admin."""
    password = Path("/etc/mailglue/mailman-rest.secret").read_text().strip()
    request = urllib.request.Request(f"http://127.0.0.1:8001{path}", data=form, method=method)
    request.add_header("Authorization", "Basic " + b64encode(f"restadmin:{password}"))
    with urllib.request.urlopen(request, timeout=30) as response:
        body: bytes = response.read()
    return body


def b64encode(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_a_members_only_list_refuses_outsiders_at_rcpt_and_takes_members(
    deployed: dict[str, Any],
) -> None:
    alice, bob = person(deployed, "alice"), person(deployed, "bob")
    mark = token()
    outsider = from_outside("stranger@example.net", [BOARD], f"board {mark}")
    refused = outsider.rcpt[BOARD]
    assert (refused.code, refused.enhanced) == (550, "5.7.1"), outsider
    assert "only its members may post to this list" in refused.text
    tx = submit(bob, [BOARD], f"agenda {mark}")
    assert tx.data is not None and tx.data.code == 250, tx
    assert wait_for_copies(alice, mark) == 1


def test_the_owner_approves_a_held_post_in_postorius_and_the_members_get_it(
    deployed: dict[str, Any], browser: WebDriver
) -> None:
    """alice owns staff: she logs in with her department password (no admin made her an
    account), finds the outsider's post among the held ones and accepts it."""
    alice, bob = person(deployed, "alice"), person(deployed, "bob")
    mark = token()
    tx = from_outside("guest@example.net", [STAFF], f"question {mark}")
    assert tx.data is not None and tx.data.code == 250, tx
    deadline = time.monotonic() + 60
    while not [h for h in held(STAFF) if mark in h.get("subject", "")]:
        assert time.monotonic() < deadline, "not held for moderation"
        time.sleep(1)

    lists_login(browser, alice)
    # Postorius shows ten held posts a page; a queue that older posts fill is paged through.
    for page in range(1, len(held(STAFF)) // 10 + 2):
        browser.get(f"{WEB}/postorius/lists/staff.example.org/held_messages?page={page}")
        rows = [r for r in browser.find_elements(By.CSS_SELECTOR, "table tr") if mark in r.text]
        if rows:
            break
    (row,) = rows
    row.find_element(By.CSS_SELECTOR, "input.message-checkbox").click()
    browser.find_element(By.CSS_SELECTOR, "input[type=submit][name=accept]").click()
    wait(browser, lambda d: mark not in d.find_element(By.TAG_NAME, "body").text)

    assert wait_for_copies(bob, mark) == 1
    assert wait_for_copies(alice, mark) == 1
    assert not [h for h in held(STAFF) if mark in h.get("subject", "")]


def test_mailman_down_defers_the_post_and_the_retry_reaches_everyone_once(
    deployed: dict[str, Any],
) -> None:
    """Nothing accepted is lost: with Mailman stopped the poster gets a 4xx (their server,
    or their mail client, tries again), and the retry after Mailman is back arrives once."""
    alice, bob = person(deployed, "alice"), person(deployed, "bob")
    mark = token()
    supervisor("stop", "mailman3")
    try:
        tx = submit(alice, [STAFF], f"retry {mark}")
        assert tx.data is not None and tx.data.code == 451, tx
        assert tx.data.enhanced is not None and tx.data.enhanced.startswith("4."), tx
    finally:
        supervisor("start", "mailman3")
    deadline = time.monotonic() + 120
    while True:  # Mailman's LMTP runner takes a while to come up
        again = submit(alice, [STAFF], f"retry {mark}")
        assert again.data is not None
        if again.data.code == 250 or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert again.data.code == 250, again
    assert wait_for_copies(bob, mark) == 1
    assert wait_for_copies(alice, mark) == 1


def supervisor(action: str, program: str) -> None:
    done = subprocess.run(
        ["supervisorctl", "-c", "/etc/supervisor/supervisord.conf", action, program],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0 and "ERROR" not in done.stdout, done.stdout + done.stderr
