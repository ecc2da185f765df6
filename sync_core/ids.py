"""The one rule for every id a caller gives us that becomes a table key (and the shapes of Graph's ids).

Azure Tables refuse a PartitionKey or RowKey holding ``/``, ``\\``, ``#``, ``?`` or a control character
(U+0000-U+001F, U+007F-U+009F), or longer than 1 KiB (512 UTF-16 code units); Azurite accepts some of these
("Understanding the Table service data model",
https://learn.microsoft.com/en-us/rest/api/storageservices/understanding-the-table-service-data-model). A ``%``
makes some Table operations fail on Azure (the Azure Storage team's "PartitionKey or RowKey containing the percent
'%' character causes some Windows Azure Tables APIs to fail", 2012), and a lone surrogate cannot be encoded at
all. So an id is 1 to 256 characters (at most 1 KiB in any encoding) with none of those: checked once, at the
trust boundary, so a bad id is a 400 naming its field and never reaches storage.

Blob names are built only from ids this service makes (uuid hex thread ids, hashed connection ids and Message-IDs),
never from caller text, so they stay inside the blob naming rules by construction.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import StringConstraints, TypeAdapter, ValidationError

from sync_core.results import BadRequest

MAX_ID_LENGTH = 256
# Characters an id may hold: none of / \ # ? %, no control character (pydantic refuses lone surrogates itself).
TABLE_KEY_PATTERN = r"^[^/\\#?%\x00-\x1f\x7f-\x9f]*$"
GUID_PATTERN = r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$"

# An id from Enrollio (user, account, thread, connection, contact) or from a URL: safe as a table key. The rule
# is a pattern, so the OpenAPI document states it too.
TableKey = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH, pattern=TABLE_KEY_PATTERN)]
OptionalTableKey = Annotated[str, StringConstraints(max_length=MAX_ID_LENGTH, pattern=TABLE_KEY_PATTERN)]
# Graph's subscription ids are GUIDs: the subscription resource's ``id`` (CONTRACT.md section 1), as in every sample
# (tests/graph_samples/subscription-create-response.json, lifecycle-reauthorization-required.json).
Guid = Annotated[str, StringConstraints(pattern=GUID_PATTERN)]

_TABLE_KEY: TypeAdapter[str] = TypeAdapter(TableKey)


def table_key(field: str, value: str | None) -> str:
    """``value`` checked as a table-safe id; a 400 naming ``field`` otherwise (route and query parameters)."""
    try:
        return _TABLE_KEY.validate_python(value)
    except ValidationError as exc:
        reason = exc.errors()[0]["msg"]
        raise BadRequest(f"invalid {field}: {reason}", fields=[{"field": field, "error": reason}]) from None
