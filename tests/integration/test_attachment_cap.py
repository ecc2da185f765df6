"""R9 on the bytes: Graph's attachment ``size`` counts Exchange's overhead (an 816-byte file is 1,053, CONTRACT.md
section 5), so a file of 3 MiB - 1 byte is reported over the cap yet syncs, byte for byte; 3 MiB + 1 does not."""

from __future__ import annotations

import base64
import hashlib

import pytest

from devtools.emulator.mail_store import MailStore
from tests.integration.conftest import Stack, wait_until
from tests.integration.test_inbound import deliver, skips, start_thread, thread, wait_for_messages

CAP = 3 * 1024 * 1024  # ATTACHMENT_CAP_BYTES


def file_of(size: int) -> bytes:
    """``size`` bytes that do not repeat (a truncated or padded download would not compare equal)."""
    return hashlib.shake_256(str(size).encode()).digest(size)


def test_a_file_of_3_mib_minus_one_byte_syncs_byte_identical(stack: Stack, user_id: str) -> None:
    mailbox = stack.new_mailbox("cap.under")
    sent = start_thread(stack, user_id, mailbox)
    data = file_of(CAP - 1)
    attachment = {"kind": "file", "name": "scan.pdf", "content_base64": base64.b64encode(data).decode()}
    reply = deliver(
        stack, mailbox, subject="RE: Trial", in_reply_to=sent["internet_message_id"], attachments=[attachment]
    )
    messages = wait_for_messages(stack, user_id, sent["thread_id"], 2)
    [synced] = [m for m in messages if m["internet_message_id"] == reply["internetMessageId"]]
    [stored] = synced["attachments"]
    assert (stored["name"], stored["size"]) == ("scan.pdf", CAP - 1)
    assert stack.enrollio.call("GET", stored["download"], params={"user_id": user_id}).content == data
    assert skips(stack, user_id) == []


@pytest.mark.parametrize(("size", "downloads"), [(CAP + 1, 1), (CAP + 200_000, 0)])
def test_a_file_over_3_mib_is_skipped_with_its_reason(stack: Stack, user_id: str, size: int, downloads: int) -> None:
    """Just over (the bytes decide, streamed up to cap + 1) and far over (Graph's size decides, no download)."""
    mailbox = stack.new_mailbox("cap.over")
    sent = start_thread(stack, user_id, mailbox)
    data = file_of(size)
    attachment = {"kind": "file", "name": "scan.pdf", "content_base64": base64.b64encode(data).decode()}
    reply = deliver(
        stack, mailbox, subject="RE: Trial", in_reply_to=sent["internet_message_id"], attachments=[attachment]
    )
    [skip] = wait_until(lambda: stack.flush() or skips(stack, user_id), what="a skip record")
    assert (skip["internet_message_id"], skip["thread_id"], skip["reason"]) == (
        reply["internetMessageId"],
        sent["thread_id"],
        "attachment_too_large",
    )
    [detail] = skip["details"]
    assert (detail["name"], detail["cap"]) == ("scan.pdf", CAP) and detail["graph_size"] > size
    # The bytes decided (streamed): the user is told the file's own size; far over, only Graph's is known.
    assert detail.get("measured_size") == (size if downloads else None)
    assert len(thread(stack, user_id, sent["thread_id"])["messages"]) == 1  # the message did not sync
    assert not list(stack.services.storage.blobs.get_container_client("attachments").list_blobs(sent["thread_id"]))
    values = [e for e in stack.emulator.log.snapshot() if reply["id"] in e.path and e.path.endswith("/$value")]
    assert len(values) == downloads


def test_every_attachment_over_the_cap_is_named_also_beside_one_far_over(stack: Stack, user_id: str) -> None:
    """R9 says which attachment: one far over the cap skips the message at once (Graph's size), and one just over
    it is measured on its bytes and named too; one under the cap is not (nothing of it is kept)."""
    mailbox = stack.new_mailbox("cap.both")
    sent = start_thread(stack, user_id, mailbox)
    near = {"kind": "file", "name": "scan.pdf", "content_base64": base64.b64encode(file_of(CAP + 1)).decode()}
    far = {"kind": "file", "name": "video.mp4", "size": 4 * CAP}
    small = {"kind": "file", "name": "note.txt", "size": 100}
    deliver(
        stack, mailbox, subject="RE: Trial", in_reply_to=sent["internet_message_id"], attachments=[far, near, small]
    )
    [skip] = wait_until(lambda: stack.flush() or skips(stack, user_id), what="a skip record")
    assert skip["reason"] == "attachment_too_large"
    assert [(d["name"], d.get("measured_size")) for d in skip["details"]] == [
        ("video.mp4", None),
        ("scan.pdf", CAP + 1),
    ]
    assert not list(stack.services.storage.blobs.get_container_client("attachments").list_blobs(sent["thread_id"]))


def test_an_attached_email_is_held_to_the_cap_on_its_mime_and_a_small_one_syncs_as_its_mime(
    stack: Stack, user_id: str
) -> None:
    """R9 on the bytes stored: an attached email is stored as its MIME ($value, CONTRACT.md section 5), which
    carries its own file in base64, a third larger (the emulator's assumption, mail_store). One carrying 2.5 MiB is
    reported under the cap yet its MIME is over it: skipped, with both sizes; a small one syncs, its MIME whole."""
    mailbox = stack.new_mailbox("cap.item")
    sent = start_thread(stack, user_id, mailbox)
    carried = 5 * CAP // 6  # 2.5 MiB
    big = {"kind": "item", "name": "Forwarded recital", "size": carried}
    deliver(stack, mailbox, subject="RE: Trial", in_reply_to=sent["internet_message_id"], attachments=[big])
    [skip] = wait_until(lambda: stack.flush() or skips(stack, user_id), what="a skip record")
    [detail] = skip["details"]
    # Its MIME is 3.4 MiB: read 64 KiB past the cap, then stopped ("more than"); Graph's size is under the cap.
    assert detail["name"] == "Forwarded recital" and detail["graph_size"] < CAP < detail["measured_at_least"]
    small = {"kind": "item", "name": "Earlier note", "size": 20_000}
    reply = deliver(stack, mailbox, subject="RE: Trial", in_reply_to=sent["internet_message_id"], attachments=[small])
    messages = wait_for_messages(stack, user_id, sent["thread_id"], 2)
    [synced] = [m for m in messages if m["internet_message_id"] == reply["internetMessageId"]]
    [stored] = synced["attachments"]
    box = stack.world.mailbox(mailbox)
    assert box is not None
    [original] = [m for m in MailStore.of(stack.world).box(box).messages.values() if m.subject == "RE: Trial"
                  and m.internet_message_id == reply["internetMessageId"]]  # fmt: skip
    mime = original.attachments[0].content
    assert stored["size"] == len(mime) > 20_000
    assert stack.enrollio.call("GET", stored["download"], params={"user_id": user_id}).content == mime
