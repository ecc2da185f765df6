"""Enrollio's read calls: a thread's messages in order, an attachment's bytes, a user's skipped messages.

Every call names the Enrollio user it acts for (``user_id``); a thread of another user answers 403.
"""

from __future__ import annotations

import re
from typing import Any

from sync_core.adapters.thread_store import MessageStore, ThreadStore
from sync_core.ids import table_key
from sync_core.results import BadRequest, Binary, Forbidden, Json, NotFound
from sync_core.services import Services
from sync_core.threads import StoredMessage, Thread

# An attachment's position as a route gives it: int32 digits (the route's int constraint), nothing Python's int()
# could choke on.
_INDEX = re.compile(r"[-+]?[0-9]{1,10}")


def _owned_thread(thread_id: str, user_id: str | None, services: Services) -> Thread:
    if not user_id:
        raise BadRequest("the user_id query parameter is required", fields=[{"field": "user_id"}])
    user_id, thread_id = table_key("user_id", user_id), table_key("thread_id", thread_id)
    thread = ThreadStore(services.storage.tables).get(thread_id)
    if thread is None:
        raise NotFound(f"thread '{thread_id}' does not exist", fields=[{"field": "thread_id"}])
    if thread.user_id != user_id:
        raise Forbidden(f"thread '{thread_id}' belongs to another user", fields=[{"field": "thread_id"}])
    return thread


def _message_view(m: StoredMessage, messages: MessageStore, base_path: str) -> dict[str, Any]:
    return {
        "message_key": m.key,
        "internet_message_id": m.internet_message_id,
        "direction": m.direction.value,
        "origin": m.origin,
        "from": m.from_address,
        "to": list(m.to),
        "cc": list(m.cc),
        "subject": m.subject,
        "sent_at": m.sent_at.isoformat(),
        "body": {"content_type": m.body_content_type, "content": messages.body(m.body_blob)},
        "attachments": [
            {
                "name": a.name,
                "size": a.size,
                "content_type": a.content_type,
                "is_inline": a.is_inline,
                "content_id": a.content_id,  # an inline image: where the HTML body says cid:{content_id}
                "link": a.link,
                "download": f"{base_path}/{m.key}/attachments/{index}" if a.blob else None,
            }
            for index, a in enumerate(m.attachments)
        ],
    }


def thread_messages(thread_id: str, user_id: str | None, services: Services) -> Json:
    thread = _owned_thread(thread_id, user_id, services)
    messages = MessageStore(services.storage.tables, services.storage.blobs)
    base_path = f"/api/threads/{thread_id}/messages"
    return Json(
        200,
        {
            "thread_id": thread.thread_id,
            "contact": {"email": thread.contact.email, "name": thread.contact.name, "id": thread.contact.contact_id},
            "subject": thread.subject,
            "conversation_id": thread.conversation_id,
            "messages": [_message_view(m, messages, base_path) for m in messages.for_thread(thread_id)],
        },
    )


def attachment(thread_id: str, message_key: str, index: str, user_id: str | None, services: Services) -> Binary:
    """One stored attachment's bytes, content type and file name; ``index`` as the route gives it (the host's int
    constraint admits only an int32; anything else is simply no attachment)."""
    _owned_thread(thread_id, user_id, services)
    message_key = table_key("message_key", message_key)
    position = int(index) if _INDEX.fullmatch(index) else -1
    messages = MessageStore(services.storage.tables, services.storage.blobs)
    message = next((m for m in messages.for_thread(thread_id) if m.key == message_key), None)
    attachments = message.attachments if message else []
    if message is None or not 0 <= position < len(attachments) or not attachments[position].blob:
        raise NotFound(
            f"no stored attachment {index} on message '{message_key}'",
            fields=[{"field": "message_key" if message is None else "index"}],
        )
    stored = attachments[position]
    return Binary(messages.attachment(stored.blob or ""), stored.content_type, stored.name)


def user_skips(user_id: str, services: Services) -> Json:
    user_id = table_key("user_id", user_id)
    messages = MessageStore(services.storage.tables, services.storage.blobs)
    return Json(
        200,
        {
            "user_id": user_id,
            "skips": [
                {
                    "thread_id": s.thread_id,
                    "connection_id": s.connection_id,
                    "internet_message_id": s.internet_message_id,
                    "direction": s.direction.value,
                    "reason": s.reason,
                    "details": list(s.details),
                    "subject": s.subject,
                    "at": s.at.isoformat(),
                }
                for s in messages.skips_for_user(user_id)
            ],
        },
    )
