"""The one GET of a message for the inbound worker, with its inline attachments' ``contentId`` however Graph takes it.

``contentId`` is a ``fileAttachment`` property: a bare ``contentId`` in the attachments' ``$select`` is refused
(CONTRACT.md section 5), so it is selected with the OData type cast (``microsoft.graph.fileAttachment/contentId``),
a form the contract has "not verified against a live tenant". Were Graph to refuse that form, every inbound
fetch would fail. So the process finds out with its first fetch (one at a time, until it knows): a 400 to the
cast is answered by the same GET without it, and when that one works, the cast is what Graph refused. From then
on the process does not ask for the cast (one refused request in all), and each inline file attachment's
``contentId`` comes from its own documented ``GET …/attachments/{id}`` (the whole attachment, bytes included: so
only for inline attachments small enough to sync, whose ``cid:`` the body uses). A 400 to both forms is the
message's own refusal, raised as it was; once the cast has worked, a 400 is the message's own at once.
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
    """What this process has learnt of Graph: whether it takes the type cast in ``$select`` (None: not yet known)."""

    def __init__(self) -> None:
        self.cast_taken: bool | None = None
        self.lock = threading.Lock()


FORM = _Form()
_WITH_CAST = {"$select": MESSAGE_SELECT, "$expand": ATTACHMENTS_EXPAND}
_WITHOUT_CAST = {"$select": MESSAGE_SELECT, "$expand": ATTACHMENTS_EXPAND_PLAIN}


def message_with_content_ids(graph: GraphClient, base: str, cap: int) -> Any:
    """The message (``MESSAGE_SELECT``) and its attachments' metadata, inline ones with their ``contentId``."""
    if FORM.cast_taken is None:
        with FORM.lock:  # the first fetches find out one at a time, so a refusal costs one request in all
            if FORM.cast_taken is None:
                return _find_out(graph, base, cap)
    if FORM.cast_taken:
        return graph.get_json(base, params=_WITH_CAST)  # a 400 now is the message's own
    return _without_cast(graph, base, cap)


def _find_out(graph: GraphClient, base: str, cap: int) -> Any:
    try:
        message = graph.get_json(base, params=_WITH_CAST)
    except GraphError as exc:
        if exc.status != 400:
            raise
        message = _without_cast(graph, base, cap)  # refused too: the message's own refusal, nothing learnt
        log.warning(
            "Graph refused the type cast in $select (%s: %s): inline attachments' contentId is read one attachment "
            "at a time from now on",
            exc.code,
            exc.message,
        )
        FORM.cast_taken = False
        return message
    FORM.cast_taken = True
    return message


def _without_cast(graph: GraphClient, base: str, cap: int) -> Any:
    message = graph.get_json(base, params=_WITHOUT_CAST)
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
