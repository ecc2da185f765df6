"""The emulator's Graph mail, over HTTPS with real tokens: what a Graph client (and the mail world) observes."""

from __future__ import annotations

import base64
import re

import pytest

from devtools.emulator import EmulatorServer
from devtools.emulator.mail_control import generated_content
from devtools.emulator.mail_store import ATTACHMENT_SIZE_OVERHEAD
from tests.emulator.conftest import CONTACT, IMMUTABLE, Graph, b64, graph_for

MB3 = 3 * 1024 * 1024


def header(message: dict[str, object], name: str) -> str | None:
    headers = message["internetMessageHeaders"]
    assert isinstance(headers, list)
    return next((h["value"] for h in headers if h["name"].lower() == name.lower()), None)


def headers_of(graph: Graph, message_id: str) -> dict[str, object]:
    answer = graph.get(f"/me/messages/{message_id}", params={"$select": "internetMessageHeaders,conversationId"})
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


# -- users ------------------------------------------------------------------------------------------------------
def test_me_and_users_answer_the_signed_in_user(graph: Graph) -> None:
    me = graph.get("/me").json()
    assert (me["id"], me["displayName"], me["mail"], me["userPrincipalName"]) == (
        graph.mailbox.id,
        "Tess Teacher",
        "teacher@school.example",
        "teacher@school.example",
    )
    assert me["@odata.context"].endswith("/$metadata#users/$entity")
    assert graph.get(f"/users/{graph.mailbox.id}").json()["id"] == graph.mailbox.id
    assert graph.get("/users/TEACHER@school.example").json()["id"] == graph.mailbox.id


def test_another_mailbox_is_out_of_reach_of_a_delegated_token(graph: Graph, emu: EmulatorServer) -> None:
    other = emu.world.add_mailbox("head@school.example")
    for path in (f"/users/{other.id}", f"/users/{other.address}/messages", f"/users/{other.id}/mailFolders/inbox"):
        answer = graph.get(path)
        assert answer.status_code == 403, path
        assert answer.json()["error"]["code"] == "ErrorAccessDenied"
    assert graph.get("/users/nobody@school.example").status_code == 404


def test_each_call_needs_its_delegated_permission(emu: EmulatorServer, graph: Graph) -> None:
    inbound = graph.deliver(attachments=[{"kind": "file", "name": "a.pdf", "size": 10}])
    read_only = Graph(
        emu,
        graph.mailbox,
        emu.identity.issue_token_for_tests(graph.mailbox.id, scopes=frozenset({"Mail.Read"})),
        graph.session,
    )
    assert read_only.get(f"/me/messages/{inbound['id']}/attachments").status_code == 200
    refused = read_only.post(
        "/me/sendMail", json={"message": {"toRecipients": [{"emailAddress": {"address": CONTACT}}]}}
    )
    assert refused.status_code == 403
    assert "Mail.Send" in refused.json()["error"]["message"]
    assert read_only.post("/me/messages", json={}).status_code == 403
    assert read_only.get("/me").status_code == 403  # User.Read was not granted


# -- drafts and attachments ---------------------------------------------------------------------------------------
def test_a_created_draft_has_ids_thread_and_message_id_up_front(graph: Graph) -> None:
    draft = graph.draft()
    assert draft["isDraft"] is True
    assert draft["parentFolderId"] == graph.folder_id("drafts")
    assert len(base64.b64decode(draft["conversationIndex"])) == 22  # a conversation header, no reply blocks
    assert re.fullmatch(r"<[^@<>]+@[^@<>]+\.prod\.outlook\.com>", draft["internetMessageId"])
    assert draft["@odata.context"].endswith(f"users('{graph.mailbox.id}')/messages/$entity")
    again = graph.get(f"/me/messages/{draft['id']}").json()
    assert (again["conversationId"], again["internetMessageId"]) == (
        draft["conversationId"],
        draft["internetMessageId"],
    )
    assert graph.draft()["conversationId"] != draft["conversationId"]  # a fresh message starts a new conversation


def test_bad_draft_fields_are_refused_naming_the_field(graph: Graph) -> None:
    answer = graph.post("/me/messages", json={"toRecipients": [{"emailAddress": {"name": "No address"}}]})
    assert answer.status_code == 400
    assert "toRecipients[0].emailAddress.address" in answer.json()["error"]["message"]
    answer = graph.post("/me/messages", json={"subject": "x", "colour": "red"})
    assert answer.status_code == 400
    assert "'colour'" in answer.json()["error"]["message"]


def test_an_attachment_post_is_limited_by_the_4_mb_request_and_a_smaller_one_kept(graph: Graph) -> None:
    # "Under 3 MB" (CONTRACT.md section 5) because a request is at most 4 MB (microsoft-graph-docs#85): with
    # base64 and JSON around it, even 3 MiB - 1 bytes are over (the measured limit is 3,145,611 bytes).
    draft = graph.draft()
    attach = {"@odata.type": "#microsoft.graph.fileAttachment", "name": "big.bin"}
    for size in (MB3, MB3 - 1):
        refused = graph.post(
            f"/me/messages/{draft['id']}/attachments", json={**attach, "contentBytes": b64(b"x" * size)}
        )
        assert refused.status_code == 400
        assert refused.json()["error"] == {**refused.json()["error"], "message": "Maximum request length exceeded."}
    kept = graph.post(f"/me/messages/{draft['id']}/attachments", json={**attach, "contentBytes": b64(b"y" * 3_000_000)})
    assert kept.status_code == 201
    # size counts Exchange's overhead too (CONTRACT.md section 5)
    assert (kept.json()["name"], kept.json()["size"]) == ("big.bin", 3_000_000 + ATTACHMENT_SIZE_OVERHEAD)
    listed = graph.get(f"/me/messages/{draft['id']}/attachments", params={"$select": "name,size"}).json()["value"]
    assert [(a["name"], a["size"]) for a in listed] == [("big.bin", 3_000_000 + ATTACHMENT_SIZE_OVERHEAD)]


def test_delete_removes_a_draft_from_the_mailbox(graph: Graph, changes: list) -> None:  # type: ignore[type-arg]
    draft = graph.draft()
    deleted = graph.call("DELETE", f"/me/messages/{draft['id']}")
    assert (deleted.status_code, deleted.content) == (204, b"")
    assert graph.get(f"/me/messages/{draft['id']}").status_code == 404
    assert graph.messages("drafts") == [] and graph.messages("deleteditems") == []
    assert [c.change_type for c in changes][-1] == "deleted"
    assert graph.call("DELETE", f"/me/messages/{draft['id']}").status_code == 404


# -- sending ------------------------------------------------------------------------------------------------------
def test_send_with_immutable_ids_keeps_the_id_and_lands_in_sent_items(graph: Graph) -> None:
    draft = graph.draft()
    sent = graph.post(f"/me/messages/{draft['id']}/send")
    assert (sent.status_code, sent.content) == (202, b"")
    copy = graph.get(f"/me/messages/{draft['id']}").json()
    assert copy["parentFolderId"] == graph.folder_id("sentitems")
    assert copy["isDraft"] is False
    assert copy["sentDateTime"]
    assert (copy["internetMessageId"], copy["conversationId"]) == (draft["internetMessageId"], draft["conversationId"])
    assert graph.messages("drafts") == []


def test_send_without_immutable_ids_gives_the_sent_copy_a_new_id(graph: Graph) -> None:
    draft = graph.post(
        "/me/messages", json={"subject": "Hi", "toRecipients": [{"emailAddress": {"address": CONTACT}}]}, prefer=()
    ).json()
    assert graph.post(f"/me/messages/{draft['id']}/send", prefer=()).status_code == 202
    gone = graph.get(f"/me/messages/{draft['id']}", prefer=())
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == "ErrorItemNotFound"
    sent = graph.get("/me/mailFolders/sentitems/messages", prefer=()).json()["value"]
    assert [m["internetMessageId"] for m in sent] == [draft["internetMessageId"]]
    assert sent[0]["id"] != draft["id"]


def test_send_delivers_to_emulator_mailboxes_and_records_outside_recipients(graph: Graph, emu: EmulatorServer) -> None:
    colleague = emu.world.add_mailbox("office@school.example")
    draft = graph.draft(
        toRecipients=[{"emailAddress": {"address": CONTACT}}],
        ccRecipients=[{"emailAddress": {"address": colleague.address}}],
    )
    graph.post(f"/me/messages/{draft['id']}/send")
    received = graph.messages("inbox", mailbox=colleague.address)
    assert [m["internetMessageId"] for m in received] == [draft["internetMessageId"]]
    assert received[0]["isDraft"] is False
    outbound = graph.control("GET", "mail/outbound", params={"mailbox": graph.mailbox.address}).json()["value"]
    assert [(o["recipients"], o["internetMessageId"]) for o in outbound] == [([CONTACT], draft["internetMessageId"])]


def test_send_without_recipients_is_refused(graph: Graph) -> None:
    draft = graph.draft(toRecipients=[])
    answer = graph.post(f"/me/messages/{draft['id']}/send")
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "ErrorInvalidRecipients"


def test_sendmail_answers_202_without_body_and_saves_to_sent_items_by_default(graph: Graph) -> None:
    message = {
        "subject": "Timetable",
        "body": {"contentType": "Text", "content": "Attached."},
        "toRecipients": [{"emailAddress": {"address": CONTACT}}],
    }
    answer = graph.post("/me/sendMail", json={"message": message})
    assert (answer.status_code, answer.content) == (202, b"")
    assert [m["subject"] for m in graph.messages("sentitems")] == ["Timetable"]
    assert graph.post("/me/sendMail", json={"message": message, "saveToSentItems": False}).status_code == 202
    assert len(graph.messages("sentitems")) == 1
    assert len(graph.control("GET", "mail/outbound").json()["value"]) == 2
    refused = graph.post("/me/sendMail", json={"message": message, "saveToSentItems": "no"})
    assert refused.status_code == 400
    assert "saveToSentItems" in refused.json()["error"]["message"]


# -- replies and conversations --------------------------------------------------------------------------------------
def test_create_reply_keeps_the_conversation_and_sets_threading_headers(graph: Graph) -> None:
    inbound = graph.deliver(subject="Trial lesson")
    answer = graph.post(f"/me/messages/{inbound['id']}/createReply", json={"comment": "Sure!"})
    assert answer.status_code == 201
    reply = answer.json()
    assert (reply["isDraft"], reply["subject"], reply["conversationId"]) == (
        True,
        "RE: Trial lesson",
        inbound["conversationId"],
    )
    assert [r["emailAddress"]["address"] for r in reply["toRecipients"]] == [CONTACT]
    headers = headers_of(graph, reply["id"])
    assert header(headers, "In-Reply-To") == inbound["internetMessageId"]
    assert inbound["internetMessageId"] in (header(headers, "References") or "")


def test_create_reply_all_addresses_everyone_but_the_owner(graph: Graph) -> None:
    inbound = graph.deliver(to=[graph.mailbox.address, "coach@club.example"], cc=["gran@family.example"])
    reply = graph.post(f"/me/messages/{inbound['id']}/createReplyAll").json()
    assert [r["emailAddress"]["address"] for r in reply["toRecipients"]] == [CONTACT, "coach@club.example"]
    assert [r["emailAddress"]["address"] for r in reply["ccRecipients"]] == ["gran@family.example"]


def test_create_reply_with_both_comment_and_message_body_is_refused(graph: Graph) -> None:
    inbound = graph.deliver()
    body = {"comment": "a", "message": {"body": {"contentType": "text", "content": "b"}}}
    assert graph.post(f"/me/messages/{inbound['id']}/createReply", json=body).status_code == 400


def test_a_contact_reply_joins_the_conversation_a_changed_subject_may_split_it(graph: Graph) -> None:
    draft = graph.draft()
    graph.post(f"/me/messages/{draft['id']}/send")
    sent = graph.control("GET", "mail/outbound").json()["value"][0]
    reply = graph.deliver(subject="RE: Spring term enrolment", in_reply_to=sent["internetMessageId"])
    assert reply["conversationId"] == draft["conversationId"]
    assert header(headers_of(graph, reply["id"]), "In-Reply-To") == draft["internetMessageId"]
    split = graph.deliver(subject="New subject", in_reply_to=draft["internetMessageId"], new_conversation=True)
    assert split["conversationId"] != draft["conversationId"]
    assert header(headers_of(graph, split["id"]), "In-Reply-To") == draft["internetMessageId"]
    fresh = graph.deliver(subject="Unrelated")
    assert fresh["conversationId"] not in {draft["conversationId"], split["conversationId"]}


def test_replies_between_emulator_mailboxes_thread_in_each_mailbox(graph: Graph, emu: EmulatorServer) -> None:
    office = graph_for(emu, emu.world.add_mailbox("office@school.example"))
    draft = graph.draft(toRecipients=[{"emailAddress": {"address": office.mailbox.address}}])
    graph.post(f"/me/messages/{draft['id']}/send")
    [received] = office.messages("inbox")
    answer = office.control(
        "POST", f"mail/{office.mailbox.address}/reply", json={"message_id": received["id"], "body_text": "Thanks"}
    )
    assert answer.status_code == 201
    assert answer.json()["conversationId"] == received["conversationId"]
    [back] = graph.messages("inbox")
    assert back["conversationId"] == draft["conversationId"]
    assert back["subject"] == "RE: Spring term enrolment"


def test_owner_replying_in_outlook_goes_to_sent_items_and_out(graph: Graph) -> None:
    inbound = graph.deliver(subject="Fees")
    answer = graph.control(
        "POST", f"mail/{graph.mailbox.address}/reply", json={"message_id": inbound["id"], "body_html": "<p>Paid</p>"}
    )
    assert answer.status_code == 201
    mine = answer.json()
    assert (mine["parentFolderId"], mine["conversationId"]) == (graph.folder_id("sentitems"), inbound["conversationId"])
    [out] = graph.control("GET", "mail/outbound").json()["value"]
    assert (out["recipients"], out["inReplyTo"]) == ([CONTACT], inbound["internetMessageId"])
    fresh = graph.control("POST", f"mail/{graph.mailbox.address}/send", json={"to": CONTACT, "subject": "Own thread"})
    assert fresh.status_code == 201
    assert fresh.json()["conversationId"] != inbound["conversationId"]


# -- reading ------------------------------------------------------------------------------------------------------
def test_select_returns_only_the_selected_properties_and_the_id(graph: Graph) -> None:
    inbound = graph.deliver()
    answer = graph.get(f"/me/messages/{inbound['id']}", params={"$select": "Subject,isRead"}).json()
    assert set(answer) == {"@odata.context", "@odata.etag", "id", "subject", "isRead"}
    assert "messages(subject,isRead)" in answer["@odata.context"]
    refused = graph.get(f"/me/messages/{inbound['id']}", params={"$select": "subject,colour"})
    assert refused.status_code == 400
    assert "'colour'" in refused.json()["error"]["message"]


def test_internet_message_headers_come_only_when_selected(graph: Graph) -> None:
    inbound = graph.deliver()
    assert "internetMessageHeaders" not in graph.get(f"/me/messages/{inbound['id']}").json()
    assert header(headers_of(graph, inbound["id"]), "Message-ID") == inbound["internetMessageId"]


def test_unknown_message_is_item_not_found(graph: Graph) -> None:
    answer = graph.get("/me/messages/AAkALgAAAAnope=")
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "ErrorItemNotFound"


def test_expanded_attachments_carry_no_bytes_unless_selected(graph: Graph) -> None:
    inbound = graph.deliver(attachments=[{"kind": "file", "name": "form.pdf", "size": 1000}])
    expanded = graph.get(
        f"/me/messages/{inbound['id']}", params={"$expand": "attachments($select=id,name,size)"}
    ).json()
    assert [set(a) for a in expanded["attachments"]] == [{"@odata.type", "id", "name", "size"}]
    every = graph.get(f"/me/messages/{inbound['id']}", params={"$expand": "attachments"}).json()["attachments"][0]
    assert base64.b64decode(every["contentBytes"]) == generated_content("form.pdf", 1000)
    cast = "microsoft.graph.fileAttachment/contentBytes"
    listed = graph.get(f"/me/messages/{inbound['id']}/attachments", params={"$select": f"name,{cast}"}).json()["value"]
    assert set(listed[0]) == {"@odata.type", "id", "name", "contentBytes"}
    # A derived-type property without its type cast is unknown on attachment (CONTRACT.md section 5).
    assert graph.get(f"/me/messages/{inbound['id']}/attachments", params={"$select": "contentId"}).status_code == 400


def test_attachment_value_is_the_delivered_bytes_and_kinds_behave(graph: Graph) -> None:
    content = bytes(range(256)) * 7
    inbound = graph.deliver(
        attachments=[
            {"kind": "file", "name": "scan.bin", "content_base64": b64(content)},
            {"kind": "inline", "name": "logo.png", "size": 64},
            {"kind": "item", "name": "Earlier note", "size": 10},
            {"kind": "reference", "name": "Plan.docx"},
        ]
    )
    listed = graph.get(f"/me/messages/{inbound['id']}/attachments").json()["value"]
    file_id, inline_id, item_id, reference_id = (a["id"] for a in listed)
    value = graph.get(f"/me/messages/{inbound['id']}/attachments/{file_id}/$value")
    assert (value.status_code, value.content) == (200, content)
    assert listed[1]["isInline"] is True
    assert graph.get(f"/me/messages/{inbound['id']}").json()["hasAttachments"] is True
    assert f"cid:{listed[1]['contentId']}" in graph.get(f"/me/messages/{inbound['id']}").json()["body"]["content"]
    item = graph.get(f"/me/messages/{inbound['id']}/attachments/{item_id}/$value")
    assert item.headers["Content-Type"].startswith("message/rfc822")
    assert item.content.startswith(b"Subject: Earlier note")
    refused = graph.get(f"/me/messages/{inbound['id']}/attachments/{reference_id}/$value")
    assert refused.status_code == 405
    assert inline_id


def test_only_inline_attachments_leave_has_attachments_false(graph: Graph) -> None:
    inbound = graph.deliver(attachments=[{"kind": "inline", "name": "logo.png", "size": 64}])
    assert graph.get(f"/me/messages/{inbound['id']}").json()["hasAttachments"] is False


def test_body_as_text_when_preferred(graph: Graph) -> None:
    inbound = graph.deliver(body_html="<p>Hello <b>Pat</b></p><style>p {}</style>")
    answer = graph.get(f"/me/messages/{inbound['id']}", prefer=(IMMUTABLE, 'outlook.body-content-type="text"'))
    assert answer.headers["Preference-Applied"] == 'outlook.body-content-type="text"'
    assert answer.json()["body"] == {"contentType": "text", "content": "Hello Pat"}


def test_folder_message_lists_page_with_top_and_next_link(graph: Graph) -> None:
    for n in range(3):
        graph.deliver(subject=f"m{n}")
    first = graph.get("/me/mailFolders('Inbox')/messages", params={"$top": "2", "$select": "subject"}).json()
    assert [m["subject"] for m in first["value"]] == ["m2", "m1"]
    rest = graph.get(first["@odata.nextLink"]).json()
    assert [m["subject"] for m in rest["value"]] == ["m0"]
    assert "@odata.nextLink" not in rest


# -- delta ----------------------------------------------------------------------------------------------------------
def run_round(graph: Graph, url: str, page_size: int | None = None, **params: str) -> tuple[list[list[dict]], str]:
    """Follow a delta round to its deltaLink; returns the pages' items and the deltaLink."""
    prefer = (IMMUTABLE, f"odata.maxpagesize={page_size}") if page_size else (IMMUTABLE,)
    pages: list[list[dict]] = []
    answer = graph.get(url, prefer=prefer, params=params or None)
    while True:
        assert answer.status_code == 200, answer.text
        pages.append(answer.json()["value"])
        if "@odata.deltaLink" in answer.json():
            return pages, answer.json()["@odata.deltaLink"]
        answer = graph.get(answer.json()["@odata.nextLink"], prefer=prefer)


DELTA = "/me/mailFolders/inbox/messages/delta"


def test_delta_pages_the_current_state_then_returns_only_changes(graph: Graph) -> None:
    ids = [graph.deliver(subject=f"m{n}")["id"] for n in range(5)]
    pages, delta_link = run_round(graph, DELTA, page_size=2, **{"$select": "subject,isRead"})
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [m["id"] for p in pages for m in p] == ids
    assert all(set(m) == {"@odata.type", "@odata.etag", "id", "subject", "isRead"} for p in pages for m in p)
    assert "$select" not in delta_link  # the token carries the original query
    newer = graph.deliver(subject="m5")["id"]
    graph.control("PATCH", f"mail/{graph.mailbox.address}/messages/{ids[1]}", json={"is_read": True})
    pages, delta_link = run_round(graph, delta_link, page_size=2)
    assert [(m["id"], set(m)) for p in pages for m in p] == [
        (newer, {"@odata.type", "@odata.etag", "id", "subject", "isRead"}),
        (ids[1], {"@odata.type", "@odata.etag", "id", "subject", "isRead"}),
    ]
    pages, _ = run_round(graph, delta_link)
    assert pages == [[]]


def test_delta_reports_a_message_moved_out_as_removed(graph: Graph) -> None:
    rest_id = graph.deliver()["restId"]
    kept = graph.deliver(subject="stays")["restId"]
    answer = graph.get(DELTA, prefer=())  # REST ids: the id changes on move (CONTRACT.md section 4)
    assert {m["id"] for m in answer.json()["value"]} == {rest_id, kept}
    moved = graph.control("POST", f"mail/{graph.mailbox.address}/messages/{rest_id}/move", json={"folder": "archive"})
    assert moved.status_code == 200
    assert moved.json()["restId"] != rest_id
    after = graph.get(answer.json()["@odata.deltaLink"], prefer=()).json()["value"]
    assert after == [{"@odata.type": "#microsoft.graph.message", "id": rest_id, "@removed": {"reason": "deleted"}}]
    archive = graph.get("/me/mailFolders/archive/messages/delta", prefer=()).json()["value"]
    assert [m["id"] for m in archive] == [moved.json()["restId"]]


def test_delta_reports_a_deleted_message_as_removed(graph: Graph) -> None:
    message_id = graph.deliver()["id"]
    _, delta_link = run_round(graph, DELTA)
    assert graph.control("DELETE", f"mail/{graph.mailbox.address}/messages/{message_id}").status_code == 204
    pages, _ = run_round(graph, delta_link)
    assert pages == [[{"@odata.type": "#microsoft.graph.message", "id": message_id, "@removed": {"reason": "deleted"}}]]


def test_an_expired_delta_token_answers_410_with_a_restart_location(graph: Graph) -> None:
    message_id = graph.deliver()["id"]
    _, delta_link = run_round(graph, DELTA)
    assert graph.control("POST", f"mail/{graph.mailbox.address}/delta/expire").status_code == 204
    gone = graph.get(delta_link)
    assert gone.status_code == 410
    assert gone.json()["error"]["code"] == "resyncRequired"
    assert gone.headers["Location"].endswith("/messages/delta?$deltatoken=")
    pages, _ = run_round(graph, gone.headers["Location"])
    assert [m["id"] for p in pages for m in p] == [message_id]


def test_a_forged_delta_token_is_a_bad_request(graph: Graph) -> None:
    answer = graph.get(DELTA, params={"$deltatoken": "not-a-token"})
    assert answer.status_code == 400
    assert "$deltatoken" in answer.json()["error"]["message"]


# -- control endpoints and the request log ----------------------------------------------------------------------------
def test_control_creates_mailboxes_that_can_sign_in(graph: Graph, emu: EmulatorServer) -> None:
    created = graph.control("POST", "mailboxes", json={"address": "new@school.example", "displayName": "New Teacher"})
    assert created.status_code == 201
    mailbox = emu.world.mailbox(created.json()["id"])
    assert mailbox is not None
    assert graph_for(emu, mailbox).get("/me").json()["displayName"] == "New Teacher"
    listed = graph.control("GET", "mailboxes").json()["value"]
    assert {m["address"] for m in listed} == {"teacher@school.example", "new@school.example"}
    refused = graph.control("POST", "mailboxes", json={"address": "no-at-sign"})
    assert refused.status_code == 400
    assert "'address'" in refused.json()["error"]["message"]


def test_control_rejects_bad_deliveries_naming_the_field(graph: Graph) -> None:
    for spec, field in (
        ({"subject": "x"}, "'from'"),
        ({"from": CONTACT, "attachments": [{"kind": "file", "name": "a"}]}, "attachments[0].size"),
        ({"from": CONTACT, "in_reply_to": "no-brackets"}, "in_reply_to"),
    ):
        answer = graph.control("POST", f"mail/{graph.mailbox.address}/deliver", json=spec)
        assert answer.status_code == 400, spec
        assert field in answer.json()["error"]["message"]


def test_request_counts_by_mailbox_and_route_and_their_reset(graph: Graph) -> None:
    inbound = graph.deliver()
    for _ in range(3):
        graph.get(f"/me/messages/{inbound['id']}")
    graph.get(f"/users/{graph.mailbox.id}/messages/{inbound['id']}")
    counts = graph.control("GET", "mail/requests").json()
    assert counts[graph.mailbox.id]["GET /me/messages/{id}"] == 3
    assert counts[graph.mailbox.id]["GET /users/{id}/messages/{id}"] == 1
    assert graph.control("DELETE", "mail/requests").status_code == 204
    assert graph.mailbox.id not in graph.control("GET", "mail/requests").json()


# -- published changes --------------------------------------------------------------------------------------------
def test_changes_are_published_for_drafts_sends_deliveries_updates_and_deletes(graph: Graph, changes: list) -> None:
    drafts, sent, inbox = graph.folder_id("drafts"), graph.folder_id("sentitems"), graph.folder_id("inbox")
    draft = graph.draft()
    graph.post(f"/me/messages/{draft['id']}/send")
    inbound = graph.deliver()
    graph.control("PATCH", f"mail/{graph.mailbox.address}/messages/{inbound['id']}", json={"flag": "flagged"})
    graph.control("DELETE", f"mail/{graph.mailbox.address}/messages/{inbound['id']}")
    seen = [(c.change_type, c.folder_id, c.item_id, c.mailbox_id) for c in changes]
    me = graph.mailbox.id
    assert seen == [
        ("created", drafts, draft["id"], me),
        ("deleted", drafts, draft["id"], me),
        ("created", sent, draft["id"], me),  # the Sent Items copy keeps the immutable id
        ("created", inbox, inbound["id"], me),
        ("updated", inbox, inbound["id"], me),
        ("deleted", inbox, inbound["id"], me),
    ]
    assert all(c.etag.startswith('W/"') for c in changes)


def test_a_listener_sees_the_state_a_change_describes(graph: Graph, emu: EmulatorServer) -> None:
    from devtools.emulator.mail_store import MailStore

    found: list[bool] = []
    store = MailStore.of(emu.world)
    emu.world.subscribe(lambda c: found.append(store.box_of(c.mailbox_id).message(c.item_id) is not None))  # type: ignore[union-attr]
    graph.draft()
    assert found == [True]


@pytest.mark.parametrize("path", ["/me/messages/x/send", "/me/sendMail"])
def test_wrong_methods_are_refused(graph: Graph, path: str) -> None:
    assert graph.get(path).status_code == 405
