"""The inbound decision: which thread a message belongs to, in which direction, and whether it may sync."""

from __future__ import annotations

import datetime as dt

import pytest
from pydantic import ValidationError

from sync_core.graph_models import GraphMessage
from sync_core.matching import (
    SIZE_OVERHEAD_ALLOWANCE,
    AttachmentMeta,
    Direction,
    Ignore,
    MailMessage,
    Skip,
    Store,
    ThreadRef,
    decide,
    direction_of,
    needs_mime_headers,
    parse_message_ids,
)

CAP = 3 * 1024 * 1024
USER = "teacher@school.example"
SENT_ITEMS = "AAMkAGI2-sentitems"
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


def test_an_attachment_far_over_the_cap_skips_the_message_naming_each_large_one() -> None:
    far = CAP + SIZE_OVERHEAD_ALLOWANCE + 1
    big = msg(attachments=(att("ok.pdf", 1024), att("scan.pdf", far), att("video.mp4", 4 * 1024 * 1024)))
    decision = decide(big, USER, THREAD, None, CAP)
    assert decision == Skip(
        "t1",
        Direction.INBOUND,
        "attachment_too_large",
        (
            {"name": "scan.pdf", "cap": CAP, "graph_size": far},
            {"name": "video.mp4", "cap": CAP, "graph_size": 4194304},
        ),
    )


def test_near_the_cap_graphs_size_decides_nothing_the_bytes_will() -> None:
    """CONTRACT.md section 5: size is larger than the file (816 bytes are reported as 1,053)."""
    near = msg(attachments=(att("just-under.pdf", CAP - 1 + 237), att("just-over.pdf", CAP + 1 + 237)))
    assert decide(near, USER, THREAD, None, CAP) == Store("t1", Direction.INBOUND)
    # Exchange's overhead is the attachment's own properties: a file of the cap whose size says 20,000 bytes more
    # (80 times the documented 237) is still left to its bytes, never skipped on Graph's word alone.
    padded = msg(attachments=(att("long-named-scan.pdf", CAP + 20_000),))
    assert decide(padded, USER, THREAD, None, CAP) == Store("t1", Direction.INBOUND)


def test_exactly_the_cap_syncs_and_reference_attachments_never_count() -> None:
    edge = msg(attachments=(att("exact.pdf", CAP), att("link", CAP * 10, kind="reference")))
    assert decide(edge, USER, THREAD, None, CAP) == Store("t1", Direction.INBOUND)


def test_a_message_in_sent_items_is_outbound_whatever_address_it_was_sent_as() -> None:
    """R5: a reply sent from an alias or a send-as address is the user's, not the contact's."""
    alias = msg(from_address="office@school.example", recipients=(CONTACT,), parent_folder_id=SENT_ITEMS)
    assert decide(alias, USER, THREAD, None, CAP, SENT_ITEMS) == Store("t1", Direction.OUTBOUND)
    assert direction_of(alias, USER, "") is Direction.INBOUND  # the folder is what tells
    on_behalf = msg(from_address="office@school.example", sender_address=USER, recipients=(CONTACT,))
    assert direction_of(on_behalf, USER, SENT_ITEMS) is Direction.OUTBOUND
    assert direction_of(msg(parent_folder_id="inbox-id"), USER, SENT_ITEMS) is Direction.INBOUND


def test_only_an_own_unmatched_message_without_threading_headers_needs_its_mime() -> None:
    renamed = msg(conversation_id="conv-2", from_address=USER, recipients=(CONTACT,), parent_folder_id=SENT_ITEMS)
    unmatched = decide(renamed, USER, None, None, CAP, SENT_ITEMS)
    assert unmatched == Ignore("no_thread")
    assert needs_mime_headers(renamed, unmatched, USER, SENT_ITEMS)
    to_other_address = msg(from_address=USER, recipients=("pat.work@office.example",), parent_folder_id=SENT_ITEMS)
    assert needs_mime_headers(to_other_address, decide(to_other_address, USER, THREAD, None, CAP), USER, SENT_ITEMS)
    matched = msg(from_address=USER, recipients=(CONTACT,), parent_folder_id=SENT_ITEMS)
    assert not needs_mime_headers(matched, decide(matched, USER, THREAD, None, CAP), USER, SENT_ITEMS)
    inbound = msg(conversation_id="conv-2")  # the contact's mail carries its headers in JSON
    assert not needs_mime_headers(inbound, decide(inbound, USER, None, None, CAP), USER, SENT_ITEMS)
    with_headers = msg(conversation_id="conv-2", from_address=USER, in_reply_to=("<elsewhere@x>",))
    assert not needs_mime_headers(with_headers, decide(with_headers, USER, None, None, CAP), USER, SENT_ITEMS)
    draft = msg(is_draft=True, from_address=USER)
    assert not needs_mime_headers(draft, decide(draft, USER, None, None, CAP), USER, SENT_ITEMS)


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


def test_mail_received_before_the_connections_start_is_ignored_however_it_matches() -> None:
    """R8: mail of a disconnected time (or from before the first sign-in) never syncs, even when a catch-up meets
    it again because it was read or flagged later (delta's filter does not keep such changes out)."""
    start = dt.datetime(2026, 11, 26, 9, 0, tzinfo=dt.UTC)
    earlier, same_second = start - dt.timedelta(seconds=1), start
    assert decide(msg(received_at=earlier), USER, THREAD, None, CAP, sync_from=start) == Ignore("before_sync_from")
    own = msg(from_address=USER, recipients=(CONTACT,), received_at=earlier)
    assert decide(own, USER, THREAD, None, CAP, SENT_ITEMS, start) == Ignore("before_sync_from")
    assert decide(msg(received_at=same_second), USER, THREAD, None, CAP, sync_from=start) == Store(
        "t1", Direction.INBOUND
    )
    assert decide(msg(received_at=earlier), USER, THREAD, None, CAP) == Store("t1", Direction.INBOUND)  # no start
    assert decide(msg(), USER, THREAD, None, CAP, sync_from=start) == Store("t1", Direction.INBOUND)  # no time


def test_a_graph_answer_with_an_id_no_row_could_hold_is_unreadable_not_unstorable() -> None:
    """Graph's ids are a few hundred characters at most; one of 40,000 is refused at the trust boundary (the
    message is unreadable_message), before any row is written with it."""
    with pytest.raises(ValidationError) as refused:
        GraphMessage.model_validate({"id": "AAkALg", "conversationId": "c" * 40_000})
    assert [e["loc"] for e in refused.value.errors()] == [("conversationId",)]
    assert GraphMessage.model_validate({"id": "AAkALg", "conversationId": "c" * 2048}).conversationId
