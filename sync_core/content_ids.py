"""The one GET of a message for the inbound worker, with its inline attachments' ``contentId`` however Graph takes it.

``contentId`` is a ``fileAttachment`` property: a bare ``contentId`` in the attachments' ``$select`` is refused
(CONTRACT.md section 5), so it is selected with the OData type cast (``microsoft.graph.fileAttachment/contentId``),
a form the contract has "not verified against a live tenant". Were Graph to refuse that form, every inbound
fetch would fail. So a 400 to it is answered by the same GET without the cast; when that one works, the cast is
what Graph refused: this process stops asking for it (one failed request in all), and each inline file
attachment's ``contentId`` comes from its own documented ``GET …/attachments/{id}`` (the whole attachment, its
bytes included: only for attachments small enough to sync, and only inline ones, whose ``cid:`` the body uses).
A 400 to the GET without the cast too is the message's own refusal, and is raised as it was.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from sync_core.adapters.graph import GraphClient, GraphError
from sync_core.graph_models import ATTACHMENTS_EXPAND, ATTACHMENTS_EXPAND_PLAIN, MESSAGE_SELECT
from sync_core.matching import SIZE_OVERHEAD_ALLOWANCE

log = logging.getLogger(__name__)


class _Form:
    """What this process has learnt of Graph: whether it refuses the type cast in ``$select``."""

    def __init__(self) -> None:
        self.cast_refused = False
        self.lock = threading.Lock()


FORM = _Form()


def message_with_content_ids(graph: GraphClient, base: str, cap: int) -> Any:
    """The message (``MESSAGE_SELECT``) and its attachments' metadata, inline ones with their ``contentId``."""
    if not FORM.cast_refused:
        try:
            return graph.get_json(base, params={"$select": MESSAGE_SELECT, "$expand": ATTACHMENTS_EXPAND})
        except GraphError as exc:
            if exc.status != 400:
                raise
            refused = exc
    else:
        refused = None
    message = graph.get_json(base, params={"$select": MESSAGE_SELECT, "$expand": ATTACHMENTS_EXPAND_PLAIN})
    if refused is not None:
        with FORM.lock:
            if not FORM.cast_refused:
                log.warning(
                    "Graph refused the type cast in $select (%s: %s): inline attachments' contentId is read one "
                    "attachment at a time from now on",
                    refused.code,
                    refused.message,
                )
            FORM.cast_refused = True
    attachments = message.get("attachments") if isinstance(message, dict) else None
    for attachment in attachments if isinstance(attachments, list) else []:
        if _needs_content_id(attachment, cap):
            whole = graph.get_json(f"{base}/attachments/{attachment['id']}")
            attachment["contentId"] = whole.get("contentId") if isinstance(whole, dict) else None
    return message


def _needs_content_id(attachment: Any, cap: int) -> bool:
    """An inline file attachment that may sync (its ``size`` not far over the cap, as ``matching`` judges it)."""
    if not isinstance(attachment, dict) or not attachment.get("isInline") or not isinstance(attachment.get("id"), str):
        return False
    if not str(attachment.get("@odata.type", "#microsoft.graph.fileAttachment")).endswith("fileAttachment"):
        return False
    size = attachment.get("size")
    return isinstance(size, int) and size <= cap + SIZE_OVERHEAD_ALLOWANCE
