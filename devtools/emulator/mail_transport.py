"""Mail leaving and arriving: a send moves the draft to Sent Items, copies land in the recipients' Inboxes.

Recipients that are mailboxes of the emulator get a copy in their Inbox (same Message-ID; threaded into their own
conversation when it references a message they have). Everyone else is an "outbound delivery", kept for the
control endpoints: that is what the contact received.
"""

from __future__ import annotations

import copy

from devtools.emulator.mail_compose import (
    new_internet_message_id,
    references_for,
    rfc5322_date,
    sent_headers,
    thread,
)
from devtools.emulator.mail_store import (
    Address,
    MailboxData,
    MailError,
    MailStore,
    Message,
    OutboundDelivery,
    new_id,
    utcnow,
)
from devtools.emulator.state import Change


def _referenced(message: Message) -> list[str]:
    """Message-IDs named by In-Reply-To and References, oldest first."""
    refs = (message.header("References") or "").split()
    reply_to = message.header("In-Reply-To")
    return [*refs, reply_to] if reply_to and reply_to not in refs else refs


def deliver_copy(box: MailboxData, sent: Message) -> list[Change]:
    """Put a received copy of ``sent`` in ``box``'s Inbox."""
    inbox = box.well_known("inbox")
    received = copy.deepcopy(sent)
    received.immutable_id, received.rest_id = new_id("AAkALgAAAAAAHYQDEapmEc2byACqAC"), new_id("AAMkAGI2TG")
    received.folder_id, received.is_draft, received.is_read = inbox.id, False, False
    received.sender_copy = False  # a delivered copy has its headers
    received.bcc = []  # Bcc recipients are never shown to the recipients
    received.received = received.created = utcnow()
    for attachment in received.attachments:
        attachment.id = new_id("AAMkAGI2THVSAAABEgAQA", 18)
    received.headers = [_received_header(box, received), *sent.headers]
    thread(received, box, _referenced(sent))
    return box.insert(received)


def dispatch(store: MailStore, box: MailboxData, sent: Message) -> list[Change]:
    """Deliver ``sent`` (already stamped with its headers) to every recipient: local Inboxes, or outbound."""
    changes: list[Change] = []
    external: list[str] = []
    seen: set[str] = set()
    for recipient in (*sent.to, *sent.cc, *sent.bcc):
        address = recipient.address.lower()
        if address in seen:
            continue
        seen.add(address)
        if (target := store.box_of(recipient.address)) is not None:
            changes += deliver_copy(target, sent)
        else:
            external.append(recipient.address)
    if external:
        store.outbound.append(
            OutboundDelivery(box.mailbox.id, box.mailbox.address, tuple(external), copy.deepcopy(sent))
        )
    return changes


def _stamp(
    box: MailboxData, message: Message, send_as: Address | None = None, on_behalf_of: Address | None = None
) -> None:
    """Make ``message`` the sender's sent copy: from the owner (or an address it may send as, or on behalf of),
    with its headers."""
    if not (message.to or message.cc or message.bcc):
        raise MailError(400, "ErrorInvalidRecipients", "At least one recipient is required: toRecipients is empty.")
    owner = Address(box.mailbox.address, box.mailbox.display_name)
    # Send As: "there is no indication that the message was sent as a different user. The sender and from
    # properties have the same value"; Send on Behalf: from is who it appears to be from, sender the user who sent
    # it (CONTRACT.md section 11, "from and sender").
    author = send_as or on_behalf_of or owner
    now = utcnow()
    message.from_, message.sender = author, (owner if on_behalf_of else author)
    message.is_draft, message.is_read = False, True
    message.sent = message.received = now
    message.headers = sent_headers(message, now)
    message.sender_copy = True


def send_draft(store: MailStore, box: MailboxData, draft: Message) -> list[Change]:
    """``POST …/messages/{id}/send``: the draft moves to Sent Items (new REST id, same immutable id)."""
    if not draft.is_draft:
        raise MailError(400, "ErrorInvalidOperation", "Only a draft (isDraft true) can be sent.")
    _stamp(box, draft)
    changes = box.move(draft, box.well_known("sentitems"))
    return changes + dispatch(store, box, draft)


def send_new(
    store: MailStore,
    box: MailboxData,
    message: Message,
    *,
    save_to_sent_items: bool,
    send_as: Address | None = None,
    on_behalf_of: Address | None = None,
) -> list[Change]:
    """``sendMail`` and mail the owner sends from Outlook: a Sent Items copy (unless told not to), then delivery."""
    _stamp(box, message, send_as, on_behalf_of)
    message.folder_id = box.well_known("sentitems").id
    changes = box.insert(message) if save_to_sent_items else []
    return changes + dispatch(store, box, message)


def receive_external(
    box: MailboxData, message: Message, in_reply_to: str | None, *, new_thread: bool = False
) -> list[Change]:
    """A message from outside the emulator lands in the Inbox, threaded by In-Reply-To when it names one."""
    if not message.internet_message_id:
        domain = (message.from_ or Address("someone@external.example")).address.split("@")[-1]
        message.internet_message_id = new_internet_message_id(domain)
    if in_reply_to:
        parent = box.by_internet_message_id(in_reply_to)
        references = references_for(parent) if parent else in_reply_to
        message.headers = [("In-Reply-To", in_reply_to), ("References", references)]
    message.sent = message.received = utcnow()
    message.folder_id = box.well_known("inbox").id
    thread(message, box, _referenced(message), new_thread)
    message.headers = [_received_header(box, message), *sent_headers(message, message.received)]
    return box.insert(message)


def _received_header(box: MailboxData, message: Message) -> tuple[str, str]:
    return (
        "Received",
        f"from mail.emulator.invalid by {box.mailbox.address.split('@')[-1]}; {rfc5322_date(message.received)}",
    )
