"""Drafts from MIME (CONTRACT.md section 6: base64 MIME with ``Content-Type: text/plain``), the threading headers
JSON cannot set (section 4), inline attachments' ``contentId`` through the type cast (section 5), and a message
leaving the mailbox for the archive mailbox (section 4: its immutable id changes)."""

from __future__ import annotations

import base64
import email
import email.policy
from email.message import EmailMessage

from tests.emulator.conftest import CONTACT, Graph

CAST = "microsoft.graph.fileAttachment/contentId"


def mime_draft(graph: Graph, mime: EmailMessage) -> dict:  # type: ignore[type-arg]
    answer = graph.post("/me/messages", data=base64.b64encode(mime.as_bytes()), headers={"Content-Type": "text/plain"})
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def reply_mime(in_reply_to: str, references: str, *, message_id: str | None = None) -> EmailMessage:
    mime = EmailMessage()
    mime["To"] = f"Pat Parent <{CONTACT}>"
    mime["Subject"] = "RE: Trial class"
    mime["In-Reply-To"] = in_reply_to
    mime["References"] = references
    if message_id:
        mime["Message-ID"] = message_id
    mime.set_content("See you then", subtype="plain")
    mime.add_alternative("<p>See you <b>then</b></p>", subtype="html")
    return mime


def test_a_mime_draft_keeps_its_threading_headers_and_sends_them(graph: Graph) -> None:
    draft = mime_draft(graph, reply_mime("<gone@school.example>", "<first@school.example> <gone@school.example>"))
    assert (draft["isDraft"], draft["subject"]) == (True, "RE: Trial class")
    assert [r["emailAddress"]["address"] for r in draft["toRecipients"]] == [CONTACT]
    assert draft["body"]["contentType"] == "html" and "<b>then</b>" in draft["body"]["content"]
    headers = graph.get(f"/me/messages/{draft['id']}", params={"$select": "internetMessageHeaders"}).json()
    assert {h["name"]: h["value"] for h in headers["internetMessageHeaders"]} == {
        "In-Reply-To": "<gone@school.example>",
        "References": "<first@school.example> <gone@school.example>",
    }
    assert graph.post(f"/me/messages/{draft['id']}/send").status_code == 202
    [delivery] = graph.control("GET", "mail/outbound").json()["value"]
    assert (delivery["inReplyTo"], delivery["references"]) == (
        "<gone@school.example>",
        "<first@school.example> <gone@school.example>",
    )
    assert [m["id"] for m in graph.messages("sentitems")] == [draft["id"]]


def test_a_mime_draft_joins_the_conversation_it_references_else_starts_one(graph: Graph) -> None:
    inbound = graph.deliver(subject="Trial class", internet_message_id="<question@home.example>")
    joined = mime_draft(graph, reply_mime("<question@home.example>", "<question@home.example>"))
    assert joined["conversationId"] == inbound["conversationId"]
    alone = mime_draft(graph, reply_mime("<unknown@school.example>", "<unknown@school.example>"))
    assert alone["conversationId"] not in {inbound["conversationId"], joined["conversationId"]}


def test_a_mime_message_id_is_kept(graph: Graph) -> None:
    draft = mime_draft(graph, reply_mime("<a@b.example>", "<a@b.example>", message_id="<mine@enrollio.example>"))
    assert draft["internetMessageId"] == "<mine@enrollio.example>"


def test_bad_base64_mime_is_refused_as_documented(graph: Graph) -> None:
    answer = graph.post("/me/messages", data=b"not base64!", headers={"Content-Type": "text/plain"})
    assert answer.status_code == 400
    assert answer.json()["error"]["message"] == "Invalid base64 string for MIME content."


def test_inline_parts_of_a_mime_draft_become_inline_attachments_with_their_content_id(graph: Graph) -> None:
    mime = EmailMessage()
    mime["To"] = CONTACT
    mime["Subject"] = "Poster"
    mime.set_content('<p><img src="cid:poster@enrollio"></p>', subtype="html")
    mime.add_related(b"\x89PNG...", maintype="image", subtype="png", cid="<poster@enrollio>", filename="poster.png")
    draft = mime_draft(graph, mime)
    [attachment] = graph.get(
        f"/me/messages/{draft['id']}", params={"$expand": f"attachments($select=name,isInline,{CAST})"}
    ).json()["attachments"]
    assert (attachment["name"], attachment["isInline"], attachment["contentId"]) == (
        "poster.png",
        True,
        "poster@enrollio",
    )


def test_a_sent_mime_draft_is_a_sent_items_copy_without_headers_whose_mime_has_them(graph: Graph) -> None:
    # Section 4 holds for every way a message is sent: the MIME draft's headers are in its $value, not its JSON.
    mime = reply_mime("<question@home.example>", "<question@home.example>")
    mime.add_attachment(
        b"\x89PNG...",
        maintype="image",
        subtype="png",
        cid="<poster@enrollio>",
        filename="poster.png",
        disposition="inline",
    )
    draft = mime_draft(graph, mime)
    assert graph.post(f"/me/messages/{draft['id']}/send").status_code == 202
    selected = graph.get(f"/me/messages/{draft['id']}", params={"$select": "internetMessageHeaders,parentFolderId"})
    assert "internetMessageHeaders" not in selected.json()
    assert selected.json()["parentFolderId"] == graph.folder_id("sentitems")
    sent = email.message_from_bytes(
        graph.get(f"/me/messages/{draft['id']}/$value").content, policy=email.policy.default
    )
    assert (sent["In-Reply-To"], sent["References"]) == ("<question@home.example>", "<question@home.example>")
    assert sent["Message-ID"] == draft["internetMessageId"]
    [part] = [p for p in sent.walk() if p.get("Content-ID")]
    assert (part["Content-ID"], part.get_content()) == ("<poster@enrollio>", b"\x89PNG...")


def test_inline_content_ids_are_selected_with_the_type_cast_only(graph: Graph) -> None:
    inbound = graph.deliver(
        body_html='<p><img src="cid:logo@school"></p>',
        attachments=[{"kind": "inline", "name": "logo.png", "size": 64, "content_id": "logo@school"}],
    )
    expanded = graph.get(f"/me/messages/{inbound['id']}", params={"$expand": f"attachments($select=id,{CAST})"})
    assert [a["contentId"] for a in expanded.json()["attachments"]] == ["logo@school"]
    assert expanded.json()["body"]["content"].count("cid:logo@school") == 1  # referenced once, not appended again
    bare = graph.get(f"/me/messages/{inbound['id']}", params={"$expand": "attachments($select=id,contentId)"})
    assert bare.status_code == 400
    assert "contentId" in bare.json()["error"]["message"]


def test_a_message_moved_to_the_archive_mailbox_changes_its_id_and_leaves_graphs_reach(graph: Graph) -> None:
    # CONTRACT.md section 4: the immutable id changes on a move to the archive mailbox, which v1.0 does not serve.
    inbound = graph.deliver(subject="Old thread")
    moved = graph.control("POST", f"mail/{graph.mailbox.address}/messages/{inbound['id']}/to-archive-mailbox")
    assert moved.status_code == 200
    archived = moved.json()
    assert archived["id"] != inbound["id"] and archived["internetMessageId"] == inbound["internetMessageId"]
    for id_ in (inbound["id"], archived["id"]):  # gone under its old id, out of v1.0's reach under its new one
        gone = graph.get(f"/me/messages/{id_}")
        assert (gone.status_code, gone.json()["error"]["code"]) == (404, "ErrorItemNotFound")
        assert graph.post(f"/me/messages/{id_}/createReply", json={}).status_code == 404
    listed = graph.control("GET", f"mail/{graph.mailbox.address}/archive").json()["value"]
    assert [(m["id"], m["subject"]) for m in listed] == [(archived["id"], "Old thread")]  # kept, not deleted
    assert graph.messages("inbox") == []


def test_message_ids_are_as_long_as_exchange_onlines(graph: Graph) -> None:
    # CONTRACT.md section 4: Exchange Online's Message-IDs are 80 characters, longer than a 78-character line.
    message_id = graph.draft()["internetMessageId"]
    assert (len(message_id), message_id[0], message_id[-18:]) == (80, "<", ".prod.outlook.com>")


def raw_mime(headers: list[str]) -> bytes:
    return ("\r\n".join([f"To: {CONTACT}", "Subject: RE: Trial class", *headers, "", "See you then", ""])).encode()


def raw_draft(graph: Graph, mime: bytes) -> dict:  # type: ignore[type-arg]
    answer = graph.post("/me/messages", data=base64.b64encode(mime), headers={"Content-Type": "text/plain"})
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def test_threading_headers_folded_between_ids_thread_the_draft(graph: Graph) -> None:
    first, question = graph.draft()["internetMessageId"], graph.deliver(subject="Trial class")
    asked = question["internetMessageId"]
    draft = raw_draft(graph, raw_mime([f"In-Reply-To: {asked}", f"References: {first}", f" {asked}"]))
    assert draft["conversationId"] == question["conversationId"]
    headers = graph.get(f"/me/messages/{draft['id']}", params={"$select": "internetMessageHeaders"}).json()
    assert {h["name"]: h["value"] for h in headers["internetMessageHeaders"]} == {
        "In-Reply-To": asked,
        "References": f"{first} {asked}",  # unfolded, as written
    }


def test_an_encoded_word_is_not_a_message_id_and_threads_nothing(graph: Graph) -> None:
    # RFC 2047 section 5 (CONTRACT.md section 4): no encoded-word in a structured field such as In-Reply-To. The
    # emulator reads these headers as written, never decoded, as a receiving server does.
    question = graph.deliver(subject="Trial class")
    asked = question["internetMessageId"]
    encoded = "=?utf-8?q?" + asked.replace("<", "=3C").replace(">", "=3E").replace("@", "=40") + "?="
    draft = raw_draft(graph, raw_mime([f"In-Reply-To: {encoded}", f"References: {encoded}"]))
    assert draft["conversationId"] != question["conversationId"]
    headers = graph.get(f"/me/messages/{draft['id']}", params={"$select": "internetMessageHeaders"}).json()
    assert {h["name"]: h["value"] for h in headers["internetMessageHeaders"]}["In-Reply-To"] == encoded
