"""The inbound decision: which thread a message belongs to, in which direction, and whether it may sync."""

from __future__ import annotations

from sync_core.matching import (
    AttachmentMeta,
    Direction,
    Ignore,
    MailMessage,
    Skip,
    Store,
    ThreadRef,
    decide,
    parse_message_ids,
)

CAP = 3 * 1024 * 1024
USER = "teacher@school.example"
CONTACT = "parent@home.example"
THREAD = ThreadRef("t1", CONTACT, frozenset({"<first@school.example>"}))


def msg(**kw: object) -> MailMessage:
    base: dict[str, object] = {
        "graph_id": "g1",
        "conversation_id": "conv-1",
        "internet_message_id": "<reply@home.example>",
        "subject": "RE: Enrolment",
        "from_address": CONTACT,
        "recipients": (USER,),
    }
    return MailMessage(**{**base, **kw})  # type: ignore[arg-type]


def att(name: str, size: int, kind: str = "file") -> AttachmentMeta:
    return AttachmentMeta("a-" + name, name, size, "application/pdf", False, kind)


def test_the_contacts_reply_in_the_conversation_is_stored_inbound() -> None:
    assert decide(msg(), USER, THREAD, None, CAP) == Store("t1", Direction.INBOUND)


def test_the_users_own_reply_from_outlook_is_outbound() -> None:
    own = msg(from_address="Teacher@School.example", recipients=(CONTACT,))
    assert decide(own, USER, THREAD, None, CAP) == Store("t1", Direction.OUTBOUND)


def test_a_thread_started_in_outlook_matches_nothing_and_is_ignored() -> None:
    assert decide(msg(conversation_id="other"), USER, None, None, CAP) == Ignore("no_thread")


def test_drafts_are_ignored_even_in_a_known_conversation() -> None:
    assert decide(msg(is_draft=True), USER, THREAD, None, CAP) == Ignore("draft")


def test_a_colliding_conversation_with_no_participant_in_common_is_not_attached() -> None:
    stranger = msg(from_address="someone@else.example", recipients=(USER,))
    assert decide(stranger, USER, THREAD, None, CAP) == Ignore("no_thread")


def test_a_message_referencing_the_thread_is_attached_even_without_the_contact() -> None:
    forwarded = msg(from_address="dad@home.example", references=("<first@school.example>",))
    assert decide(forwarded, USER, THREAD, THREAD, CAP) == Store("t1", Direction.INBOUND)


def test_a_split_conversation_matches_through_in_reply_to_and_records_an_alias() -> None:
    renamed = msg(conversation_id="conv-2", subject="New subject", in_reply_to=("<first@school.example>",))
    assert decide(renamed, USER, None, THREAD, CAP) == Store("t1", Direction.INBOUND, new_alias="conv-2")


def test_an_attachment_over_the_cap_skips_the_message_naming_each_large_one() -> None:
    big = msg(attachments=(att("ok.pdf", 1024), att("scan.pdf", CAP + 1), att("video.mp4", 4 * 1024 * 1024)))
    decision = decide(big, USER, THREAD, None, CAP)
    assert decision == Skip(
        "t1",
        Direction.INBOUND,
        "attachment_too_large",
        ({"name": "scan.pdf", "size": CAP + 1, "cap": CAP}, {"name": "video.mp4", "size": 4194304, "cap": CAP}),
    )


def test_exactly_the_cap_syncs_and_reference_attachments_never_count() -> None:
    edge = msg(attachments=(att("exact.pdf", CAP), att("link", CAP * 10, kind="reference")))
    assert decide(edge, USER, THREAD, None, CAP) == Store("t1", Direction.INBOUND)


def test_message_id_headers_are_parsed() -> None:
    assert parse_message_ids("<a@x> <b@y>\r\n <c@z>") == ("<a@x>", "<b@y>", "<c@z>")
    assert parse_message_ids(None) == ()


def test_conversation_depth_counts_reply_levels_of_exchanges_index() -> None:
    import base64

    from sync_core.graph_models import conversation_depth

    header = bytes(22)
    assert conversation_depth(base64.b64encode(header).decode()) == 0
    assert conversation_depth(base64.b64encode(header + bytes(10)).decode()) == 2
    assert conversation_depth("") == 0
    assert conversation_depth("not base64!") == 0
