"""The pure list rule: create what is missing, add the inventory's people once, never remove
anyone, enforce the inventory's settings; and the summary line Ansible reads."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from milters.lists.plan import (
    NEW_LIST_SETTINGS,
    AcceptAliases,
    Configure,
    CreateDomain,
    CreateList,
    DomainSpec,
    Left,
    ListSpec,
    ListState,
    MailmanState,
    Subscribe,
    plan,
    settings_change,
    upstream_lists,
)
from milters.lists.sync import StateFileError, Summary, load_ledger, save_ledger

STAFF = ListSpec(
    name="staff@example.org",
    owners=("alice@example.org",),
    moderators=("bob@example.org",),
    members=("carol@example.org", "Dave@Relay.test"),
)
ID = "staff.example.org"
EMPTY = MailmanState(frozenset(), {})
# A list's settings once a pass has made them the inventory's (its defaults here).
SETTLED: Mapping[str, str] = {**NEW_LIST_SETTINGS, **ListSpec("x@example.org").settings()}


def state(
    rosters: Mapping[str, set[str]] | None = None,
    settings: Mapping[str, str] | None = None,
    domains: tuple[str, ...] = ("example.org",),
) -> MailmanState:
    roster = {role: frozenset(v) for role, v in (rosters or {}).items()}
    listed = ListState(roster, dict(settings or SETTLED))
    return MailmanState(frozenset(domains), {ID: listed})


ALL_ON = {
    "owner": {"alice@example.org"},
    "moderator": {"bob@example.org"},
    "member": {"carol@example.org", "dave@relay.test"},
}


def test_list_ids_are_mailmans() -> None:
    assert STAFF.list_id == "staff.example.org"
    assert STAFF.mail_host == "example.org"


def test_an_empty_mailman_gets_domain_list_people_in_that_order() -> None:
    result = plan([], [STAFF], EMPTY, {})
    assert result.actions == (
        CreateDomain("example.org"),
        CreateList("staff@example.org", ID),
        Subscribe(ID, "staff@example.org", "alice@example.org", "owner"),
        Subscribe(ID, "staff@example.org", "bob@example.org", "moderator"),
        Subscribe(ID, "staff@example.org", "carol@example.org", "member"),
        Subscribe(ID, "staff@example.org", "Dave@Relay.test", "member"),
        Configure(
            ID,
            "staff@example.org",
            (("max_message_size", "40", "0"), ("archive_policy", "public", "private")),
        ),
    )
    assert result.left == ()


def test_domains_from_the_inventory_and_from_list_names_once_each() -> None:
    result = plan(
        [DomainSpec("lists.example.org", "www.example.org"), DomainSpec("example.org")],
        [STAFF],
        MailmanState(frozenset({"lists.example.org"}), {}),
        {},
    )
    assert [a for a in result.actions if isinstance(a, CreateDomain)] == [
        CreateDomain("example.org")
    ]


def test_nothing_to_do_when_mailman_has_it_all() -> None:
    result = plan([], [STAFF], state(ALL_ON), {})
    assert result.actions == ()
    assert result.ledger == {
        ID: {
            "owner": frozenset({"alice@example.org"}),
            "moderator": frozenset({"bob@example.org"}),
            "member": frozenset({"carol@example.org", "dave@relay.test"}),
        }
    }


def test_addresses_compare_without_case_and_twins_are_added_once() -> None:
    spec = ListSpec("staff@example.org", owners=("Alice@Example.org", "alice@example.org"))
    assert plan([], [spec], state({"owner": {"alice@example.org"}}), {}).actions == ()
    actions = plan([], [spec], state(), {}).actions
    assert actions == (Subscribe(ID, "staff@example.org", "Alice@Example.org", "owner"),)


def test_additive_only_people_mailman_has_beyond_the_inventory_stay() -> None:
    """Members who joined in Postorius, owners someone delegated to: nothing is removed,
    and there is no action that could remove anyone."""
    rosters = {role: {*addresses, f"extra-{role}@relay.test"} for role, addresses in ALL_ON.items()}
    assert plan([], [STAFF], state(rosters), {}).actions == ()


def test_someone_who_left_is_not_added_again() -> None:
    ledger = plan([], [STAFF], state(ALL_ON), {}).ledger
    # carol unsubscribed in Postorius; alice handed the list to someone else
    now = {**ALL_ON, "member": {"dave@relay.test"}, "owner": {"erin@example.org"}}
    result = plan([], [STAFF], state(now), ledger)
    assert result.actions == ()
    assert result.left == (
        Left("staff@example.org", "alice@example.org", "owner"),
        Left("staff@example.org", "carol@example.org", "member"),
    )
    assert result.ledger == ledger  # still remembered: a later run leaves them out too


def test_someone_new_in_the_inventory_is_added_to_an_existing_list() -> None:
    ledger = plan([], [STAFF], state(ALL_ON), {}).ledger
    grown = ListSpec(**{**STAFF.__dict__, "members": (*STAFF.members, "frank@example.org")})
    result = plan([], [grown], state(ALL_ON), ledger)
    assert result.actions == (Subscribe(ID, "staff@example.org", "frank@example.org", "member"),)
    assert "frank@example.org" in result.ledger[ID]["member"]


def test_dropping_a_name_from_the_inventory_forgets_it_so_naming_it_again_adds_it() -> None:
    ledger = plan([], [STAFF], state(ALL_ON), {}).ledger
    fewer = ListSpec(**{**STAFF.__dict__, "members": ("Dave@Relay.test",)})
    forgotten = plan([], [fewer], state({**ALL_ON, "member": {"dave@relay.test"}}), ledger)
    assert forgotten.ledger[ID]["member"] == {"dave@relay.test"}
    again = plan([], [STAFF], state({**ALL_ON, "member": {"dave@relay.test"}}), forgotten.ledger)
    assert again.actions == (Subscribe(ID, "staff@example.org", "carol@example.org", "member"),)


def test_a_list_mailman_lost_is_seeded_afresh_whatever_the_ledger_says() -> None:
    ledger = plan([], [STAFF], state(ALL_ON), {}).ledger
    result = plan([], [STAFF], MailmanState(frozenset({"example.org"}), {}), ledger)
    assert CreateList("staff@example.org", ID) in result.actions
    assert len([a for a in result.actions if isinstance(a, Subscribe)]) == 4
    assert result.left == ()


def test_lists_no_longer_in_the_inventory_keep_their_ledger_and_are_left_alone() -> None:
    old = {"old.example.org": {"member": frozenset({"x@example.org"})}}
    result = plan([], [STAFF], state(ALL_ON), old)
    assert result.ledger["old.example.org"] == old["old.example.org"]
    assert result.actions == ()


@pytest.mark.parametrize(
    ("have", "expected"),
    [
        ({**SETTLED, "description": "x"}, None),
        (
            {**SETTLED, "default_nonmember_action": "accept", "description": "x"},
            (("default_nonmember_action", "accept", "hold"),),
        ),
        # Mailman's own defaults: posts over 40 KB held, the archive open to the web
        (
            {**SETTLED, "max_message_size": "40", "archive_policy": "public"},
            (("max_message_size", "40", "0"), ("archive_policy", "public", "private")),
        ),
        (
            {},
            (
                ("default_nonmember_action", None, "hold"),
                ("max_message_size", None, "0"),
                ("archive_policy", None, "private"),
            ),
        ),
    ],
)
def test_settings_the_inventory_decides(
    have: dict[str, str], expected: tuple[tuple[str, str | None, str], ...] | None
) -> None:
    """The description is left as the owners set it unless the inventory gives one."""
    change = settings_change(ListSpec("staff@example.org"), have)
    assert (change.changes if change else None) == expected


def test_a_lists_own_size_limit_and_archive_policy_from_the_inventory() -> None:
    spec = ListSpec("all@example.org", max_message_kb=2048, archive_policy="public")
    change = settings_change(spec, SETTLED)
    assert change is not None
    assert change.values == {"max_message_size": "2048", "archive_policy": "public"}


def test_a_described_list_gets_its_description_and_nonmember_action() -> None:
    spec = ListSpec("staff@example.org", description="The staff", nonmember_action="reject")
    change = settings_change(spec, NEW_LIST_SETTINGS)
    assert change == Configure(
        ID,
        "staff@example.org",
        (
            ("default_nonmember_action", "hold", "reject"),
            ("max_message_size", "40", "0"),
            ("archive_policy", "public", "private"),
            ("description", "", "The staff"),
        ),
    )
    assert change.values == {
        "default_nonmember_action": "reject",
        "max_message_size": "0",
        "archive_policy": "private",
        "description": "The staff",
    }
    assert change.describe() == (
        "set default_nonmember_action 'hold' -> 'reject', max_message_size '40' -> '0', "
        "archive_policy 'public' -> 'private', description '' -> 'The staff' "
        "on staff@example.org"
    )
    # a new list is compared with Mailman's defaults: settings come after its people
    actions = plan([], [spec], EMPTY, {}).actions
    assert actions[-1] == change


# --- nested lists: a list accepts its upstream lists' addresses as destinations -------------

ALL = ListSpec("all@example.org", owners=("alice@example.org",), members=("Staff@Example.org",))
ALL_ID = "all.example.org"


def nested(staff_aliases: set[str], all_aliases: set[str] | None = None) -> MailmanState:
    """staff and all as Mailman has them, everyone on them already."""
    staff = ListState({r: frozenset(a) for r, a in ALL_ON.items()}, SETTLED)
    lists = {ID: ListState(staff.rosters, staff.settings, frozenset(staff_aliases))}
    lists[ALL_ID] = ListState(
        {"owner": frozenset({"alice@example.org"}), "member": frozenset({"staff@example.org"})},
        SETTLED,
        frozenset(all_aliases or ()),
    )
    return MailmanState(frozenset({"example.org"}), lists)


def test_a_list_that_is_a_member_of_another_accepts_its_address() -> None:
    """all@'s posts reach staff@ with `To: all@example.org`: without the alias staff holds
    them ("Message has implicit destination"). Members compare without case."""
    result = plan([], [STAFF, ALL], nested(set()), {})
    accept = AcceptAliases(ID, "staff@example.org", ("all@example.org",), ("all@example.org",))
    assert result.actions == (accept,)
    assert accept.describe() == "add all@example.org to the acceptable_aliases of staff@example.org"


def test_aliases_the_owners_added_are_kept_in_the_new_set() -> None:
    owners = {"staff@lists.example.org", "^.*@staff\\.example\\.org$"}
    (accept,) = plan([], [STAFF, ALL], nested(owners), {}).actions
    assert accept == AcceptAliases(
        ID,
        "staff@example.org",
        ("^.*@staff\\.example\\.org$", "all@example.org", "staff@lists.example.org"),
        ("all@example.org",),
    )


def test_an_alias_already_there_is_no_action() -> None:
    assert plan([], [STAFF, ALL], nested({"all@example.org"}), {}).actions == ()
    # and the owners' extra aliases do not matter
    assert plan([], [STAFF, ALL], nested({"all@example.org", "x@relay.test"}), {}).actions == ()


def test_a_list_that_is_nobodys_member_gets_no_alias_action() -> None:
    """all@ is on no list (and a person named like a list elsewhere is not a list)."""
    assert upstream_lists([STAFF, ALL]) == {"staff@example.org": ("all@example.org",), ALL.name: ()}
    actions = plan([], [STAFF, ALL], nested(set()), {}).actions
    assert [a.name for a in actions if isinstance(a, AcceptAliases)] == ["staff@example.org"]
    assert plan([], [STAFF], state(ALL_ON), {}).actions == ()  # no parent in the inventory


def test_lists_further_up_are_accepted_too_and_loops_end() -> None:
    """all@ -> staff@ -> board@: board@ gets all@'s posts (still `To: all@`) through staff@.
    A loop (all@ also a member of board@) ends, and no list is its own alias."""
    board = ListSpec("board@example.org", owners=("alice@example.org",))
    staff = ListSpec(**{**STAFF.__dict__, "members": (*STAFF.members, "board@example.org")})
    assert upstream_lists([staff, ALL, board])["board@example.org"] == (
        "staff@example.org",
        "all@example.org",
    )
    looped = ListSpec(**{**board.__dict__, "members": ("All@example.org",)})  # -> all@
    up = upstream_lists([staff, ALL, looped])
    assert up["board@example.org"] == ("staff@example.org", "all@example.org")
    assert up["all@example.org"] == ("board@example.org", "staff@example.org")
    assert up["staff@example.org"] == ("all@example.org", "board@example.org")


def test_a_new_nested_list_gets_its_aliases_after_its_settings() -> None:
    actions = plan([], [STAFF, ALL], EMPTY, {}).actions
    accepts = [a for a in actions if isinstance(a, AcceptAliases)]
    assert accepts == [
        AcceptAliases(ID, "staff@example.org", ("all@example.org",), ("all@example.org",))
    ]
    staff_actions = [a for a in actions if getattr(a, "list_id", None) == ID]
    assert staff_actions[-1] == accepts[0]


# --- the summary line (Ansible's changed_when) and the state file ----------------------------


def test_summary_line_ends_with_changed() -> None:
    s = Summary(2)
    assert s.line() == (
        "lists: 2 lists; created 0 domains and 0 lists, added 0 owners, 0 moderators and "
        "0 members, changed 0 lists' settings and 0 lists' acceptable_aliases; changed: 0"
    )
    for action in plan([], [STAFF, ALL], EMPTY, {}).actions:
        s.count(action)
    s.problems = 1
    assert (s.lists_created, s.settings_changed, s.aliases_changed, s.changed) == (2, 2, 1, 12)
    assert s.line().endswith(
        "changed 2 lists' settings and 1 lists' acceptable_aliases, "
        "1 refused by Mailman (see the log); changed: 12"
    )
    dry = Summary(1, dry_run=True, lists_created=1)
    assert dry.line().startswith("lists (dry run): 1 lists; would create 0 domains and 1 lists")
    assert dry.line().endswith("; changed: 0, would change: 1")


def test_ledger_round_trip_and_no_rewrite_when_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "state" / "lists.json"
    assert load_ledger(str(path)) == {}  # first run
    ledger = plan([], [STAFF], state(ALL_ON), {}).ledger
    save_ledger(str(path), ledger)
    assert load_ledger(str(path)) == ledger
    assert path.stat().st_mode & 0o777 == 0o600
    before = path.stat().st_mtime_ns
    save_ledger(str(path), ledger)
    assert path.stat().st_mtime_ns == before


@pytest.mark.parametrize("text", ["not json", "[]", '{"lists": 3}', "{}"])
def test_a_broken_state_file_stops_rather_than_re_adding_everyone(
    tmp_path: Path, text: str
) -> None:
    path = tmp_path / "lists.json"
    path.write_text(text)
    with pytest.raises(StateFileError, match="not a state file mailglue wrote"):
        load_ledger(str(path))


def test_an_unwritable_state_file_is_a_state_file_error(tmp_path: Path) -> None:
    (tmp_path / "not-a-dir").write_text("")
    with pytest.raises(StateFileError, match="cannot write"):
        save_ledger(str(tmp_path / "not-a-dir" / "lists.json"), {})


def test_a_list_joining_another_gets_no_welcome_message_and_a_person_does() -> None:
    """A welcome message sent to a list would be held there (its sender is no member)."""
    result = plan([], [STAFF, ALL], MailmanState(frozenset({"example.org"}), {}), {})
    joins = {a.address.lower(): a.welcome for a in result.actions if isinstance(a, Subscribe)}
    assert joins["staff@example.org"] is False
    assert [w for address, w in joins.items() if address != "staff@example.org"] == [True] * (
        len(joins) - 1
    )
