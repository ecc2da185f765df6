"""The emulator's mail answers have the shape of Microsoft's documented samples and parse into msgraph-sdk models.

Each test performs the operation a sample documents and compares shapes (keys and JSON types, CONTRACT.md
appendix); the SDK checks parse the emulator's JSON into ``msgraph.generated.models`` and fail on anything the
model could not place.
"""

from __future__ import annotations

from typing import Any

import pytest
from msgraph.generated.models.attachment import Attachment
from msgraph.generated.models.file_attachment import FileAttachment
from msgraph.generated.models.message import Message

from tests.emulator.conftest import CONTACT, Graph, b64
from tests.emulator.contract_helpers import assert_same_shape, sample, sdk_leftovers

NULLABLE_ATTACHMENT_FIELDS = {"contentId", "contentLocation"}


def delivered_with_attachments(graph: Graph) -> dict[str, Any]:
    return graph.deliver(
        subject="Invoice",
        attachments=[
            {
                "kind": "file",
                "name": "invoice.pdf",
                "content_base64": b64(b"%PDF-1.7 ..."),
                "content_type": "application/pdf",
            },
            {"kind": "inline", "name": "logo.png", "size": 300},
            {"kind": "item", "name": "Forwarded note", "size": 200},
            {"kind": "reference", "name": "Term plan.docx"},
        ],
    )


def test_get_message_has_the_documented_default_shape(graph: Graph) -> None:
    message = graph.deliver(subject="9/9/2018: concert", body_html="The group represents Nevada.")
    answer = graph.get(f"/me/messages/{message['id']}")
    assert answer.status_code == 200
    assert_same_shape(sample("message-get-response.json"), answer.json())


def test_create_draft_answer_has_the_documented_shape(graph: Graph) -> None:
    answer = graph.post(
        "/me/messages",
        json={
            "subject": "Did you see last night's game?",
            "importance": "Low",
            "body": {"contentType": "HTML", "content": "They were <b>awesome</b>!"},
            "toRecipients": [{"emailAddress": {"address": CONTACT}}],
        },
    )
    assert answer.status_code == 201
    assert_same_shape(sample("message-create-draft-response.json"), answer.json())


def test_attachment_list_and_get_have_the_documented_shapes(graph: Graph) -> None:
    message = delivered_with_attachments(graph)
    listed = graph.get(f"/me/messages/{message['id']}/attachments")
    assert listed.status_code == 200
    assert_same_shape(sample("attachments-list-response.json"), listed.json(), nullable=NULLABLE_ATTACHMENT_FIELDS)
    first = listed.json()["value"][0]
    got = graph.get(f"/me/messages/{message['id']}/attachments/{first['id']}")
    assert got.status_code == 200
    assert_same_shape(sample("attachment-get-file-response.json"), got.json(), nullable=NULLABLE_ATTACHMENT_FIELDS)


def test_delta_pages_have_the_documented_shapes(graph: Graph) -> None:
    for subject in ("Holiday hours update", "Holiday promotion sale", "Fabric CDN now available"):
        graph.deliver(subject=subject)
    prefer = ('IdType="ImmutableId"', "odata.maxpagesize=2")
    first = graph.get(
        "/me/mailFolders/inbox/messages/delta", params={"$select": "subject,sender,isRead"}, prefer=prefer
    )
    assert first.status_code == 200
    assert_same_shape(sample("delta-messages-page1-nextlink.json"), first.json())
    last = graph.get(first.json()["@odata.nextLink"], prefer=prefer)
    assert last.status_code == 200
    assert_same_shape(sample("delta-messages-final-page-deltalink.json"), last.json())


def test_throttled_answer_has_the_documented_429_shape(graph: Graph) -> None:
    graph.emu.faults.configure(rate_limit=1, rate_window_seconds=60)
    assert graph.get("/me").status_code == 200
    throttled = graph.get("/me")
    assert throttled.status_code == 429
    assert float(throttled.headers["Retry-After"]) > 0
    assert_same_shape(sample("error-429-too-many-requests.json"), throttled.json())


def test_the_documented_sendmail_request_is_accepted_as_written(graph: Graph) -> None:
    body = sample("sendmail-request.json")  # note the doc's string "false" for saveToSentItems
    answer = graph.post("/me/sendMail", json=body)
    assert answer.status_code == 202
    assert answer.content == b""
    outbound = graph.control("GET", "mail/outbound").json()["value"]
    assert [(o["subject"], o["recipients"]) for o in outbound] == [
        ("Meet for lunch?", ["fannyd@contoso.onmicrosoft.com", "danas@contoso.onmicrosoft.com"])
    ]
    assert graph.messages("sentitems") == []  # saveToSentItems "false" was honoured


@pytest.mark.parametrize(
    "prefer", [('IdType="ImmutableId"',), ('IdType="ImmutableId"', 'outlook.body-content-type="text"')]
)
def test_messages_round_trip_through_the_sdk_message_model(graph: Graph, prefer: tuple[str, ...]) -> None:
    message = delivered_with_attachments(graph)
    full = graph.get(f"/me/messages/{message['id']}", params={"$expand": "attachments"}, prefer=prefer).json()
    assert sdk_leftovers(full, Message) == []
    selected = graph.get(
        f"/me/messages/{message['id']}",
        params={
            "$select": "internetMessageHeaders,uniqueBody,conversationIndex",
            "$expand": "attachments($select=name)",
        },
        prefer=prefer,
    ).json()
    assert sdk_leftovers(selected, Message) == []
    draft = graph.draft()
    assert sdk_leftovers(draft, Message) == []


def test_attachments_round_trip_through_the_sdk_attachment_models(graph: Graph) -> None:
    message = delivered_with_attachments(graph)
    listed = graph.get(f"/me/messages/{message['id']}/attachments").json()["value"]
    assert [a["@odata.type"] for a in listed] == [
        "#microsoft.graph.fileAttachment",
        "#microsoft.graph.fileAttachment",
        "#microsoft.graph.itemAttachment",
        "#microsoft.graph.referenceAttachment",
    ]
    for item in listed:
        assert sdk_leftovers(item, Attachment) == [], item["@odata.type"]
    file_attachment = graph.get(f"/me/messages/{message['id']}/attachments/{listed[0]['id']}").json()
    assert sdk_leftovers(file_attachment, FileAttachment) == []


def test_the_shape_check_reports_the_path_of_a_mismatch() -> None:
    documented = {"value": [{"sender": {"emailAddress": {"address": "a@b.example"}}}]}
    with pytest.raises(AssertionError, match=r"\$\.value\[0\]\.sender\.emailAddress\.address: sample has string"):
        assert_same_shape(documented, {"value": [{"sender": {"emailAddress": {"address": 7}}}]})
    with pytest.raises(AssertionError, match=r"\$\.value\[0\]: key 'sender' is missing"):
        assert_same_shape(documented, {"value": [{}]})


def test_the_sdk_check_reports_unknown_and_mistyped_fields() -> None:
    assert sdk_leftovers({"subject": "x", "isRead": "yes", "colour": "red"}, Message) == ["$.colour", "$.isRead"]
