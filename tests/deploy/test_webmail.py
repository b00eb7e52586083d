"""Webmail in a real browser: Debian's Chromium, headless, driven by Selenium, against the
Roundcube that `make up` serves on https://localhost/.

Each test does what a member does with the mouse and keyboard, then looks where the member
(or the colleague, or the outside world) would: the page, the mailbox over IMAPS, the stand-in
remote MX. Screenshots of the inbox and the filter page go to tests/deploy/screenshots/.
"""

from __future__ import annotations

import http.client
import imaplib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.request import urlopen

import pytest
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select

from tests.deploy.browser import (
    BASE,
    attach,
    compose,
    compose_and_send,
    logged_in,
    login,
    open_page,
    send_composed,
    shown_error,
    wait,
)
from tests.deploy.mailuser import (
    OUTSIDE,
    RemoteMx,
    assert_delivered,
    attachments_of,
    dkim_verifies,
    from_outside,
    in_folder,
    person,
    size_limit,
    tagged_from_outside,
    token,
)
from tests.deploy.stack import DEPLOY_MARKS, changed_tasks, recap, run_playbook, smoke
from tests.harness.managesieve import ManageSieve
from tests.harness.smtp import send, tls_context

pytestmark = DEPLOY_MARKS

SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"


def uid_of(who: dict[str, str], subject: str, folder: str = "INBOX") -> str:
    with smoke.imap_login(who["uid"], who["password"]) as imap:
        imap.select(folder, readonly=True)
        status, data = imap.uid("SEARCH", "SUBJECT", f'"{subject}"')
    assert status == "OK" and data[0], f"{subject!r} not in {folder}"
    return str(data[0].split()[-1].decode())


def save_form(driver: WebDriver) -> None:
    """Scroll to the form's Save button and click it, as the user does."""
    button = driver.find_element(By.CSS_SELECTOR, "button.submit")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", button)
    button.click()


def active_script(who: dict[str, str]) -> str:
    with ManageSieve() as sieve:
        sieve.login(who["uid"], who["password"])
        active = [name for name, on in sieve.scripts_with_state() if on]
        return sieve.get(active[0]) if active else ""


def wait_for_script(who: dict[str, str], text: str) -> str:
    """What the web form saved, as Cyrus has it: the active script, once it holds `text`."""
    deadline = time.monotonic() + 30
    while text not in (script := active_script(who)):
        assert time.monotonic() < deadline, f"{text!r} never reached the Sieve script:\n{script}"
        time.sleep(0.5)
    return script


# --- the web server -------------------------------------------------------------------------------


def test_http_redirects_to_https(deployed: dict[str, Any]) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", 80, timeout=10)
    connection.request("GET", "/?_task=mail", headers={"Host": "localhost"})
    reply = connection.getresponse()
    assert reply.status == 301, reply.status
    assert reply.getheader("Location") == "https://localhost/?_task=mail"


@pytest.mark.parametrize(
    "path", ["/config/config.inc.php", "/installer/", "/logs/errors.log", "/.htaccess", "/temp/"]
)
def test_config_logs_and_installer_are_not_served(deployed: dict[str, Any], path: str) -> None:
    try:
        with urlopen(BASE + path, context=tls_context(), timeout=10) as page:
            status = page.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    assert status in (403, 404), (path, status)


def test_session_cookie_is_secure_httponly_and_strict(browser: WebDriver) -> None:
    browser.get(BASE + "/")
    wait(browser, ec.visibility_of_element_located((By.ID, "rcmloginuser")))
    cookies = {c["name"]: c for c in browser.get_cookies()}
    session = cookies["roundcube_sessid"]
    assert session["secure"] and session["httpOnly"], session
    assert session.get("sameSite") == "Strict", session


# --- reading --------------------------------------------------------------------------------------


def test_inbox_lists_a_delivered_message_and_shows_its_headers(
    deployed: dict[str, Any], browser: WebDriver
) -> None:
    alice = person(deployed, "alice")
    subject = f"read me in the browser {token()}"
    assert_delivered(from_outside("friend@example.net", [alice["mail"]], subject))
    assert in_folder(alice, subject) is not None
    logged_in(browser, alice["uid"], alice["password"])
    wait(browser, ec.text_to_be_present_in_element((By.ID, "messagelist"), subject))
    SCREENSHOTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(SCREENSHOTS / "inbox.png"))
    uid = uid_of(alice, subject)
    browser.get(f"{BASE}/?_task=mail&_action=show&_uid={uid}&_mbox=INBOX")
    wait(browser, ec.text_to_be_present_in_element((By.TAG_NAME, "body"), subject))
    browser.get(f"{BASE}/?_task=mail&_action=viewsource&_uid={uid}&_mbox=INBOX")
    source = wait(browser, ec.presence_of_element_located((By.TAG_NAME, "body"))).text
    assert "X-Spam-Status: No" in source


# --- sending --------------------------------------------------------------------------------------


def test_send_to_a_colleague_and_the_outside(
    deployed: dict[str, Any], browser: WebDriver, remote_mx: RemoteMx
) -> None:
    alice, bob = person(deployed, "alice"), person(deployed, "bob")
    mark = token()
    subject = f"from webmail {mark}"
    logged_in(browser, alice["uid"], alice["password"])
    compose_and_send(browser, [bob["mail"], OUTSIDE], subject, "Sent from the browser.")
    assert in_folder(bob, subject) is not None, "not in bob's INBOX"
    outside = remote_mx.find(mark)
    assert outside is not None, "never reached the remote MX"
    assert b"X-Mail-Args: <alice@example.org>" in outside
    assert dkim_verifies(outside), outside[:2000]
    assert in_folder(alice, subject, folder="INBOX.Sent") is not None, "no copy in Sent"
    # it went in through submission like any client's: AUTH as alice, scanned, outbound
    found = re.search(rb"(?im)^Message-ID:\s*(<[^>]+>)", outside)
    assert found, outside[:500]
    (event,) = [e for e in milter_events() if e.get("message_id") == found.group(1).decode()]
    assert event["client"]["sasl_user"] == "alice" and event["direction"] == "outbound", event
    # and the admin's `mailglue trace`, typed in a root login shell as the README says, tells
    # its story like any other message's
    shown = subprocess.run(
        ["env", "-i", "bash", "-lc", f"mailglue trace '{found.group(1).decode()}'"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert "sasl=alice" in shown.stdout and "from      alice@example.org" in shown.stdout, (
        shown.stdout
    )


def test_a_colleague_is_offered_by_name_while_typing_and_gets_the_mail(
    deployed: dict[str, Any], browser: WebDriver, newcomer: dict[str, str]
) -> None:
    """Writing to a colleague one has never written to: typing part of their name offers
    them from the department's directory (LDAP, searched as the member), and picking the
    offer sends to the right mailbox."""
    alice = person(deployed, "alice")
    subject = f"welcome aboard {token()}"
    logged_in(browser, alice["uid"], alice["password"])
    open_page(browser, f"{BASE}/?_task=mail&_action=compose")
    typed = wait(
        browser, ec.element_to_be_clickable((By.CSS_SELECTOR, "#compose_to .recipient-input input"))
    )
    typed.send_keys(newcomer["name"].split()[-1])  # the surname only
    offer = wait(
        browser,
        ec.visibility_of_element_located(
            (By.XPATH, f"//*[@id='rcmKSearchpane']//li[contains(., '{newcomer['mail']}')]")
        ),
    )
    assert newcomer["name"] in offer.text, offer.text
    offer.click()
    to = browser.find_element(By.ID, "_to")
    wait(browser, lambda _: newcomer["mail"] in (to.get_attribute("value") or ""))
    browser.find_element(By.ID, "compose-subject").send_keys(subject)
    browser.find_element(By.ID, "composebody").send_keys("Glad to have you here.")
    assert send_composed(browser) is None, shown_error(browser)
    assert in_folder(newcomer, subject) is not None, "not in the colleague's INBOX"


def test_a_new_member_sends_from_webmail_under_their_own_name(
    deployed: dict[str, Any], browser: WebDriver, newcomer: dict[str, str]
) -> None:
    """Nora logs in as newcomer-…: her first webmail login names her as the directory does
    (cn and mail), so what she sends says who she is, not only her login name."""
    bob = person(deployed, "bob")
    subject = f"hello from the new office {token()}"
    logged_in(browser, newcomer["uid"], newcomer["password"])
    compose(browser, [bob["mail"]], subject, "My first mail from here.")
    sender = browser.find_element(By.ID, "_from").text
    assert f"{newcomer['name']} <{newcomer['mail']}>" in sender, sender
    assert send_composed(browser) is None, shown_error(browser)
    received = in_folder(bob, subject)
    assert received is not None, "not in bob's INBOX"
    assert f"From: {newcomer['name']} <{newcomer['mail']}>".encode() in received, received


ROUNDCUBE_ERRORS = Path("/var/log/roundcube/errors.log")


def test_a_new_members_first_webmail_login_leaves_no_warning_in_the_log(
    deployed: dict[str, Any], browser: WebDriver, newcomer: dict[str, str]
) -> None:
    """An admin reads Roundcube's errors.log for real trouble: a member's first login (when
    Roundcube makes the user and looks them up in the directory) adds nothing to it but PHP's
    notes on deprecated code in Debian's LDAP library."""
    before = ROUNDCUBE_ERRORS.stat().st_size if ROUNDCUBE_ERRORS.exists() else 0
    logged_in(browser, newcomer["uid"], newcomer["password"])
    open_page(browser, BASE + "/?_task=settings&_action=identities")
    wait(browser, ec.text_to_be_present_in_element((By.ID, "identities-table"), newcomer["mail"]))
    with ROUNDCUBE_ERRORS.open("rb") as log:
        log.seek(before)
        added = log.read().decode(errors="replace").splitlines()
    trouble = [line for line in added if line.strip() and "PHP Deprecated:" not in line]
    assert trouble == [], trouble


def largest_file_webmail_takes() -> int:
    """The largest file Roundcube lets a member attach: its check counts 10 KB for the text
    and 1.33 bytes per byte of the file against its `max_message_size`."""
    config = Path("/etc/roundcube/config.inc.php").read_text(encoding="utf-8")
    found = re.search(r"\$config\['max_message_size'\] = '(\d+)';", config)
    assert found, "no max_message_size in Roundcube's configuration"
    return int((int(found.group(1)) - 10 * 1024) / 1.33)


def test_the_largest_file_webmail_takes_is_sent_and_arrives_intact(
    deployed: dict[str, Any], browser: WebDriver, tmp_path: Path
) -> None:
    """Whatever Roundcube lets a member attach (~18 MB of the default 25 MB), the server then
    takes: the colleague's copy is the same file, not a 552 at sending."""
    alice, bob = person(deployed, "alice"), person(deployed, "bob")
    subject = f"the data set {token()}"
    data = os.urandom(largest_file_webmail_takes())
    assert len(data) > size_limit() // 2
    (tmp_path / "data.bin").write_bytes(data)
    logged_in(browser, alice["uid"], alice["password"])
    compose(browser, [bob["mail"]], subject, "Here it is.")
    assert attach(browser, tmp_path / "data.bin") is None
    assert send_composed(browser) is None
    assert in_folder(bob, subject, timeout=120) is not None, "not in bob's INBOX"
    assert attachments_of(bob, subject) == [data], "bob's copy is not the file alice attached"


def test_a_file_too_large_to_send_is_refused_when_attached(
    deployed: dict[str, Any], browser: WebDriver, tmp_path: Path
) -> None:
    """Base64 makes a file ~4/3 as large, so a file of 80 % of the limit would make the message
    too large: Roundcube says so as it is attached, naming the largest file that fits (~18 MB
    of the default 25 MB), before anything is sent."""
    alice = person(deployed, "alice")
    limit = size_limit()
    (tmp_path / "big.bin").write_bytes(os.urandom(limit * 4 // 5))
    logged_in(browser, alice["uid"], alice["password"])
    compose(browser, [alice["mail"]], f"too big {token()}", "Will not fit.")
    refused = attach(browser, tmp_path / "big.bin")
    largest_file_mb = int(limit / 1.33 / 1024 / 1024)  # Roundcube's own allowance for base64
    assert refused is not None and f"maximum size of {largest_file_mb} MB" in refused, refused


def milter_events() -> list[dict[str, Any]]:
    log = Path("/var/log/mailglue/milter.log").read_text(encoding="utf-8", errors="replace")
    events = (json.loads(line) for line in log.splitlines() if line.startswith("{"))
    return [e for e in events if e.get("event") == "transaction"]


# --- filters, forwarding, vacation ----------------------------------------------------------------


NEW_MEMBER_SCRIPT = Path("/etc/cyrus/sieve/default.sieve")  # what Cyrus gives a new mailbox


@pytest.fixture
def bob_settings_restored(deployed: dict[str, Any]) -> Iterator[None]:
    """Bob starts with the script a new member gets (his mailbox may be older than it) and
    gets his own back afterwards (the web UI edits it in place)."""
    bob = person(deployed, "bob")
    with ManageSieve() as sieve:
        sieve.login(bob["uid"], bob["password"])
        active = [name for name, on in sieve.scripts_with_state() if on]
        original = {name: sieve.get(name) for name in active}
        sieve.put("default.sieve", NEW_MEMBER_SCRIPT.read_text(encoding="utf-8"))
        sieve.activate("default.sieve")
    yield
    with ManageSieve() as sieve:
        sieve.login(bob["uid"], bob["password"])
        for name, text in original.items():
            sieve.put(name, text)
            sieve.activate(name)


def test_filter_forward_and_vacation_from_settings(
    deployed: dict[str, Any],
    browser: WebDriver,
    remote_mx: RemoteMx,
    bob_settings_restored: None,
) -> None:
    bob = person(deployed, "bob")
    mark = token()
    logged_in(browser, bob["uid"], bob["password"])

    # a filter: Subject contains X -> folder Y
    new_filter_form(browser, f"reports {mark}")
    Select(browser.find_element(By.ID, "header0")).select_by_value("subject")
    Select(browser.find_element(By.ID, "rule_op0")).select_by_value("contains")
    browser.find_element(By.NAME, "_rule_target[0][]").send_keys(f"report-{mark}")
    Select(browser.find_element(By.ID, "action_type0")).select_by_value("fileinto")
    Select(browser.find_element(By.ID, "action_mailbox0")).select_by_value("INBOX.Trash")
    save_form(browser)
    browser.switch_to.default_content()
    script = wait_for_script(bob, f"report-{mark}")
    assert script.index("X-Spam-Flag") < script.index(f"report-{mark}"), script  # Junk first
    browser.get(f"{BASE}/?_task=settings&_action=plugin.managesieve")
    wait(browser, ec.text_to_be_present_in_element((By.TAG_NAME, "body"), f"reports {mark}"))
    SCREENSHOTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(SCREENSHOTS / "filters.png"))

    # forwarding: a filter for all messages that sends a copy to the outside
    forward_everything(browser, bob, f"fwd {mark}", "redirect_copy")

    # vacation
    browser.get(f"{BASE}/?_task=settings&_action=plugin.managesieve-vacation")
    wait(browser, ec.visibility_of_element_located((By.ID, "vacation_subject"))).send_keys(
        f"Out of office {mark}"
    )
    browser.find_element(By.ID, "vacation_reason").send_keys("Back on Monday.")
    Select(browser.find_element(By.ID, "vacation_status")).select_by_value("on")
    save_form(browser)
    script = wait_for_script(bob, f"Out of office {mark}")

    # mail sent afterwards: filed by the filter, forwarded, answered once per sender
    filed = f"weekly report-{mark}"
    assert_delivered(from_outside("boss@example.net", [bob["mail"]], filed))
    assert in_folder(bob, filed, folder="INBOX.Trash") is not None, "filter did not file it"
    plain = f"hello bob {mark}"
    stranger = f"stranger-{mark}@example.net"
    for n in (1, 2):
        assert_delivered(from_outside(stranger, [bob["mail"]], f"{plain} {n}"))
    assert in_folder(bob, f"{plain} 1") is not None
    forwarded = remote_mx.find(f"{plain} 1")
    assert forwarded is not None and f"X-Rcpt-Args: <{OUTSIDE}>".encode() in forwarded
    # the reply to stranger, not the first reply: vacation may answer boss too (his mail was
    # filed, not stopped), and the stand-in MX names files by the second
    reply = remote_mx.find(f"X-Rcpt-Args: <{stranger}>")
    assert reply is not None, f"no vacation reply to {stranger}; the script:\n{script}"
    assert f"Out of office {mark}".encode() in reply
    time.sleep(3)
    replies = [r for r in remote_mx.all_containing(stranger) if b"Out of office" in r]
    assert len(replies) == 1, replies

    # tagged spam still goes to Junk, and is neither forwarded nor answered
    tagged = f"tagged {mark}"
    spammer = f"offers-{mark}@example.net"
    assert_delivered(tagged_from_outside(spammer, [bob["mail"]], tagged))
    copy = in_folder(bob, tagged, folder="INBOX.Junk")
    assert copy is not None, "tagged mail not in Junk"
    assert b"X-Spam-Flag: YES" in copy and b"Precedence: junk" in copy
    time.sleep(3)  # a forwarded copy or a reply, if any, would have arrived by now
    assert remote_mx.all_containing(tagged) == [], "tagged spam was forwarded"
    assert remote_mx.all_containing(spammer) == [], "tagged spam was answered"


def test_a_redirect_filter_forwards_without_keeping_a_copy(
    deployed: dict[str, Any],
    browser: WebDriver,
    remote_mx: RemoteMx,
    bob_settings_restored: None,
) -> None:
    """*Redirect message to* (unlike *Send message copy to*) keeps no copy: the mail is at
    the other address and not in the INBOX."""
    bob = person(deployed, "bob")
    mark = token()
    logged_in(browser, bob["uid"], bob["password"])
    script = forward_everything(browser, bob, f"away {mark}", "redirect")
    assert ":copy" not in script.split(f"away {mark}")[-1], script
    subject = f"moved on {mark}"
    assert_delivered(from_outside("boss@example.net", [bob["mail"]], subject))
    deadline = time.monotonic() + 60
    while (forwarded := remote_mx.find(subject)) is None and time.monotonic() < deadline:
        time.sleep(1)
    assert forwarded is not None and f"X-Rcpt-Args: <{OUTSIDE}>".encode() in forwarded
    assert in_folder(bob, subject, timeout=3) is None, "a copy stayed in the INBOX"


def new_filter_form(driver: WebDriver, name: str) -> None:
    """Settings → Filters → Create: the form opens in a frame, which stays selected."""
    driver.get(f"{BASE}/?_task=settings&_action=plugin.managesieve")
    create = (By.XPATH, "//a[contains(@onclick, \"'plugin.managesieve-add'\")]")
    wait(driver, ec.element_to_be_clickable(create)).click()
    wait(driver, ec.frame_to_be_available_and_switch_to_it((By.ID, "filter-box")))
    wait(driver, ec.visibility_of_element_located((By.ID, "_name"))).send_keys(name)


def forward_everything(driver: WebDriver, who: dict[str, str], name: str, action: str) -> str:
    """A filter for all messages with `action` (redirect, or redirect_copy: *Send message copy
    to*) to the outside address; the member's active script once Cyrus has it."""
    new_filter_form(driver, name)
    choose_all_messages(driver)
    Select(driver.find_element(By.ID, "action_type0")).select_by_value(action)
    driver.find_element(By.ID, "action_target0").send_keys(OUTSIDE)
    save_form(driver)
    driver.switch_to.default_content()
    return wait_for_script(who, OUTSIDE)


def choose_all_messages(driver: WebDriver) -> None:
    """The filter form's "all messages" choice: a select in compact skins, a radio elsewhere."""
    join = driver.find_element(By.NAME, "_join")
    if join.tag_name == "select":
        Select(join).select_by_value("any")
    else:
        driver.find_element(By.ID, "_any").click()


# --- PostgreSQL for the split layout --------------------------------------------------------------

PG_PORT = 5439  # a PostgreSQL of the test's own, on loopback
PG_PASSWORD = "pg-roundcube-test-password"


@pytest.fixture
def postgres() -> Iterator[int]:
    """A PostgreSQL cluster from Debian's packages in a temp dir, with the database and owner
    its admin would make for Roundcube."""
    (bin_dir,) = sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1:]
    root = Path(tempfile.mkdtemp(prefix="mailglue-pg-"))
    root.chmod(0o755)
    data = root / "data"

    def as_postgres(*argv: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *argv], check=True, timeout=120)

    shutil.chown(root, "postgres")
    as_postgres(str(bin_dir / "initdb"), "-D", str(data), "--auth-local=peer")
    with (data / "postgresql.conf").open("a", encoding="utf-8") as conf:
        conf.write(
            f"listen_addresses = '127.0.0.1'\nport = {PG_PORT}\n"
            f"unix_socket_directories = '{root}'\n"
        )
    (data / "pg_hba.conf").write_text(
        "local all postgres peer\nhost roundcube roundcube 127.0.0.1/32 scram-sha-256\n"
    )
    as_postgres(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "start")
    try:
        for statement in (
            f"CREATE ROLE roundcube LOGIN PASSWORD '{PG_PASSWORD}'",
            "CREATE DATABASE roundcube OWNER roundcube ENCODING 'UTF8' TEMPLATE template0",
        ):
            as_postgres("psql", "-X", "-h", str(root), "-p", str(PG_PORT), "-c", statement)
        yield PG_PORT
    finally:
        as_postgres(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop")
        shutil.rmtree(root, ignore_errors=True)


def pg_users() -> list[str]:
    done = subprocess.run(
        [
            "psql",
            "-X",
            "-t",
            "-A",
            "-h",
            "127.0.0.1",
            "-p",
            str(PG_PORT),
            "-U",
            "roundcube",
            "-d",
            "roundcube",
            "-c",
            "SELECT username FROM users ORDER BY username",
        ],
        env={**os.environ, "PGPASSWORD": PG_PASSWORD},
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    users: list[str] = done.stdout.split()
    return users


@pytest.mark.playbook
def test_webmail_keeps_its_data_in_postgresql_when_told_to(
    deployed: dict[str, Any], browser: WebDriver, postgres: int
) -> None:
    alice = person(deployed, "alice")
    settings = json.dumps(
        {
            "webmail_database": "pgsql",
            "webmail_pgsql_port": postgres,
            "webmail_pgsql_password": PG_PASSWORD,
            "webmail_pgsql_sslmode": "disable",
        }
    )
    try:
        first = run_playbook("--tags", "webmail", "-e", settings)
        assert first.returncode == 0, first.stdout[-3000:]
        second = run_playbook("--tags", "webmail", "-e", settings)
        assert recap(second.stdout)["changed"] == 0, changed_tasks(second.stdout)
        assert PG_PASSWORD not in first.stdout + second.stdout

        logged_in(browser, alice["uid"], alice["password"])  # a user row is made at login
        assert alice["uid"] in pg_users()
    finally:
        back = run_playbook("--tags", "webmail")  # the inventory's own choice: SQLite
        assert back.returncode == 0, back.stdout[-3000:]
    browser.delete_all_cookies()
    logged_in(browser, alice["uid"], alice["password"])  # and SQLite works again


ROUNDCUBE_SQLITE = Path("/var/lib/dbconfig-common/sqlite3/roundcube/roundcube")


def test_a_member_sends_as_an_alias_they_belong_to_from_a_new_identity(
    deployed: dict[str, Any], browser: WebDriver
) -> None:
    """Settings → Identities: alice adds postmaster@ (an alias she is in) and sends from it;
    bob gets it from postmaster@, and the server took it as hers (no "not owned" refusal)."""
    if deployed["vars"].get("webmail_database", "sqlite") != "sqlite":
        pytest.skip("the clean-up below reads Roundcube's SQLite database")
    alice, bob = person(deployed, "alice"), person(deployed, "bob")
    alias = "postmaster@example.org"
    try:
        logged_in(browser, alice["uid"], alice["password"])
        open_page(browser, f"{BASE}/?_task=settings&_action=add-identity")
        browser.find_element(By.ID, "rcmfd_name").send_keys("Postmaster")
        browser.find_element(By.ID, "rcmfd_email").send_keys(alias)
        save_form(browser)
        wait(browser, lambda d: "_action=add-identity" not in d.current_url)  # form posted
        open_page(browser, f"{BASE}/?_task=settings&_action=identities")
        wait(browser, ec.text_to_be_present_in_element((By.ID, "identities-table"), alias))
        subject = f"from the postmaster {token()}"
        compose(browser, [bob["mail"]], subject, "The server restarts tonight.")
        Select(browser.find_element(By.ID, "_from")).select_by_visible_text(f"Postmaster <{alias}>")
        error = send_composed(browser)
        assert error is None, f"Roundcube did not send it: {error}"
        got = in_folder(bob, subject)
        assert got is not None, "not in bob's INBOX"
        assert re.search(rb"(?mi)^From: Postmaster <postmaster@example\.org>", got), got[:1500]
    finally:
        with sqlite3.connect(ROUNDCUBE_SQLITE) as db:
            db.execute("UPDATE identities SET del = 1 WHERE email = ?", (alias,))


# --- password -------------------------------------------------------------------------------------


def change_password(driver: WebDriver, user: str, current: str, new: str) -> None:
    driver.get(f"{BASE}/?_task=settings&_action=plugin.password")
    wait(driver, ec.visibility_of_element_located((By.ID, "curpasswd"))).send_keys(current)
    driver.find_element(By.ID, "newpasswd").send_keys(new)
    driver.find_element(By.ID, "confpasswd").send_keys(new)
    save_form(driver)
    note = wait(driver, ec.visibility_of_element_located((By.CSS_SELECTOR, "#messagestack div")))
    assert "uccessfully" in note.text, note.text
    deadline = time.monotonic() + 30
    while not imap_accepts(user, new):
        assert time.monotonic() < deadline, "the new password never worked"
        time.sleep(1)


def imap_accepts(user: str, password: str) -> bool:
    try:
        with smoke.imap_login(user, password):
            return True
    except imaplib.IMAP4.error:
        return False


def submission_accepts(who: dict[str, str], password: str) -> bool:
    tx = send(
        ("127.0.0.1", 587),
        who["mail"],
        [who["mail"]],
        b"Subject: pw check\r\n\r\nx\r\n",
        login=(who["uid"], password),
    )
    return tx.mail.code == 250


def test_password_change_takes_effect_everywhere(
    deployed: dict[str, Any], browser: WebDriver
) -> None:
    bob = person(deployed, "bob")
    old, new = bob["password"], f"new-{token()}-pw"
    logged_in(browser, bob["uid"], old)
    change_password(browser, bob["uid"], old, new)
    try:
        assert imap_accepts(bob["uid"], new) and submission_accepts(bob, new)
        assert not imap_accepts(bob["uid"], old), "the old password still opens IMAP"
        assert not submission_accepts(bob, old), "the old password still sends"
    finally:
        browser.delete_all_cookies()
        logged_in(browser, bob["uid"], new)
        change_password(browser, bob["uid"], new, old)
    assert imap_accepts(bob["uid"], old)


@pytest.mark.playbook
def test_a_password_changed_in_webmail_survives_the_next_playbook_run(
    deployed: dict[str, Any], browser: WebDriver
) -> None:
    """The inventory's password is where a member starts: the admin's next run (a new member,
    `make up` again) must not put it back. An admin's reset, a new value in the inventory, is
    applied, and putting the old value back in the inventory applies that again."""
    bob = person(deployed, "bob")
    old, own, reset = bob["password"], f"own-{token()}-pw", f"reset-{token()}-pw"
    logged_in(browser, bob["uid"], old)
    change_password(browser, bob["uid"], old, own)
    try:
        run = run_playbook("--tags", "ldap")
        assert run.returncode == 0, run.stdout[-3000:]
        assert imap_accepts(bob["uid"], own), "the playbook put the inventory's password back"
        assert not imap_accepts(bob["uid"], old)

        users = [dict(u, password=reset) if u is bob else u for u in deployed["users"]]
        run = run_playbook("--tags", "ldap", "-e", json.dumps({"ldap_users": users}))
        assert run.returncode == 0, run.stdout[-3000:]
        assert imap_accepts(bob["uid"], reset), "the admin's reset was not applied"
        assert not imap_accepts(bob["uid"], own)
    finally:
        run = run_playbook("--tags", "ldap")
        assert run.returncode == 0, run.stdout[-3000:]
    assert imap_accepts(bob["uid"], old), "the inventory's value, back again, was not applied"
    assert submission_accepts(bob, old)


# --- wrong passwords ------------------------------------------------------------------------------


def test_wrong_password_is_refused_clearly_and_throttled(
    deployed: dict[str, Any], browser: WebDriver
) -> None:
    alice = person(deployed, "alice")
    messages = []
    for _ in range(6):
        browser.delete_all_cookies()
        login(browser, alice["uid"], "not-her-password")
        try:
            alert = wait(
                browser,
                ec.visibility_of_element_located((By.CSS_SELECTOR, "#messagestack div")),
                20,
            )
            messages.append(alert.text)
        except TimeoutException:
            messages.append(browser.find_element(By.TAG_NAME, "body").text[:200])
    assert "Login failed" in messages[0], messages
    assert any("Too many" in m or "too many" in m for m in messages[1:]), messages


def webmail_login_from(source: str, user: str, password: str) -> int | None:
    """A login through the web form as a script would post it, from `source` (a loopback
    address other than 127.0.0.1, which fail2ban ignores): the HTTP status, or None when
    the connection is refused or dropped (banned)."""
    connection = http.client.HTTPSConnection(
        "127.0.0.1", 443, context=tls_context(), timeout=5, source_address=(source, 0)
    )
    try:
        connection.request("GET", "/", headers={"Host": "localhost"})
        page = connection.getresponse()
        body = page.read().decode("utf-8", "replace")
        cookies = "; ".join(
            v.split(";")[0] for k, v in page.getheaders() if k.lower() == "set-cookie"
        )
        found = re.search(r'name="_token" value="([^"]+)"', body)
        assert found, body[-1000:]
        form = urllib.parse.urlencode(
            {
                "_token": found.group(1),
                "_task": "login",
                "_action": "login",
                "_user": user,
                "_pass": password,
                "_timezone": "UTC",
                "_url": "",
            }
        )
        headers = {
            "Host": "localhost",
            "Cookie": cookies,
            "Content-Type": "application/x-www-form-urlencoded",
        }
        connection.request("POST", "/?_task=login", body=form, headers=headers)
        answer = connection.getresponse()
        answer.read()
        return answer.status
    except OSError:
        return None
    finally:
        connection.close()


def test_webmail_password_guessing_is_banned_by_fail2ban(deployed: dict[str, Any]) -> None:
    """Roundcube itself lets an address try 3 passwords a minute (webmail_login_rate_limit);
    fail2ban's roundcube-auth jail bans it once 5 failures are logged within its findtime,
    so a guesser is shut out within about two minutes, at every port the jail guards."""
    alice = person(deployed, "alice")
    guesser = "127.0.0.81"
    try:
        deadline = time.monotonic() + 200
        answers = []
        while (answer := webmail_login_from(guesser, alice["uid"], "guess")) is not None:
            answers.append(answer)
            assert answer != 302, "a wrong password logged in"
            assert time.monotonic() < deadline, f"never banned: {answers}"
            time.sleep(4)
        status = subprocess.run(
            ["fail2ban-client", "status", "roundcube-auth"], capture_output=True, text=True
        ).stdout
        assert guesser in status, status
        # the member, from elsewhere, logs in as usual
        assert imap_accepts(alice["uid"], alice["password"])
        assert webmail_login_from("127.0.0.82", alice["uid"], alice["password"]) == 302
    finally:
        subprocess.run(["fail2ban-client", "set", "roundcube-auth", "unbanip", guesser])


# --- mail clients configure themselves -----------------------------------------------------------


def _autoconfig(url: str, host: str) -> ET.Element:
    request = urllib.request.Request(url, headers={"Host": host})
    with urlopen(request, context=tls_context(), timeout=10) as page:
        assert page.status == 200
        return ET.fromstring(page.read())


@pytest.mark.parametrize(
    "url, host",
    [
        (BASE + "/.well-known/autoconfig/mail/config-v1.1.xml", "example.org"),
        (
            "http://127.0.0.1/mail/config-v1.1.xml?emailaddress=alice%40example.org",
            "autoconfig.example.org",
        ),
    ],
)
def test_a_client_set_up_from_autoconfig_reads_and_sends(
    deployed: dict[str, Any], url: str, host: str
) -> None:
    """What Thunderbird does with only an address and a password: fetch the description,
    then use it. (mail.example.org does not resolve here: the client connects to 127.0.0.1.)"""
    alice, bob = person(deployed, "alice"), person(deployed, "bob")
    config = _autoconfig(url, host)
    imap = config.find("./emailProvider/incomingServer[@type='imap']")
    smtp = config.find("./emailProvider/outgoingServer[@type='smtp']")
    assert imap is not None and smtp is not None
    assert (
        imap.findtext("hostname") == smtp.findtext("hostname") == deployed["vars"]["mail_hostname"]
    )
    assert (imap.findtext("port"), imap.findtext("socketType")) == ("993", "SSL")
    assert (smtp.findtext("port"), smtp.findtext("socketType")) == ("587", "STARTTLS")
    login = {"%EMAILLOCALPART%": alice["mail"].split("@")[0], "%EMAILADDRESS%": alice["mail"]}[
        str(imap.findtext("username"))
    ]
    with smoke.imap_login(login, alice["password"], port=int(str(imap.findtext("port")))):
        pass
    subject = f"set up by autoconfig {token()}"
    tx = send(
        ("127.0.0.1", int(str(smtp.findtext("port")))),
        alice["mail"],
        [bob["mail"]],
        f"From: {alice['mail']}\r\nTo: {bob['mail']}\r\nSubject: {subject}\r\n\r\nhi\r\n".encode(),
        login=(login, alice["password"]),
    )
    assert_delivered(tx)
    assert in_folder(bob, subject) is not None
