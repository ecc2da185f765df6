"""Documented Graph facts the emulator must honour, where the offline world used to be kinder than Microsoft's.

Each test names the section of CONTRACT.md (docs/graph-contract.md) it follows. A product test that passes only
because the emulator is kinder than Graph is a defect: these keep the emulator as strict as the documentation.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy

import pytest

from devtools.emulator import EmulatorServer, mail_delta
from devtools.emulator.mail_control import generated_content
from devtools.emulator.mail_store import MailStore
from tests.emulator.conftest import CONTACT, IMMUTABLE, Graph, b64, graph_for
from tests.emulator.test_mail import DELTA, run_round


def received_at(graph: Graph, message_id: str, moment: dt.datetime) -> None:
    """Stamp a message's receivedDateTime (the world's clock is real time; tests need distinct ones)."""
    box = MailStore.of(graph.emu.world).box(graph.mailbox)
    with graph.emu.world.lock:
        message = box.message(message_id)
        assert message is not None
        message.received = moment


T0 = dt.datetime(2020, 11, 30, 9, 0, tzinfo=dt.UTC)  # in the past: new deliveries come after it


# -- CONTRACT.md section 7: delta takes $filter=receivedDateTime ge|gt {value}, and then at most 5,000 messages --
def test_delta_filters_on_received_time_and_keeps_the_filter_in_its_links(graph: Graph) -> None:
    early, edge, late = (graph.deliver(subject=s)["id"] for s in ("early", "edge", "late"))
    for message_id, minutes in ((early, 0), (edge, 10), (late, 20)):
        received_at(graph, message_id, T0 + dt.timedelta(minutes=minutes))
    pages, delta_link = run_round(graph, DELTA, **{"$filter": "receivedDateTime ge 2020-11-30T09:10:00Z"})
    assert [m["id"] for p in pages for m in p] == [edge, late]
    pages, _ = run_round(graph, DELTA, **{"$filter": "receivedDateTime gt 2020-11-30T09:10:00.0000000Z"})
    assert [m["id"] for p in pages for m in p] == [late]
    assert "$filter" not in delta_link  # carried by the token, like $select
    newer = graph.deliver(subject="after the round")["id"]
    pages, _ = run_round(graph, delta_link)
    assert [m["id"] for p in pages for m in p] == [newer]


@pytest.mark.parametrize(
    "expression",
    ["subject eq 'x'", "receivedDateTime le 2020-11-30T09:10:00Z", "receivedDateTime ge yesterday"],
)
def test_delta_refuses_any_other_filter_naming_it(graph: Graph, expression: str) -> None:
    answer = graph.get(DELTA, params={"$filter": expression})
    assert answer.status_code == 400
    assert "$filter" in answer.json()["error"]["message"]


def test_a_filtered_delta_round_stops_at_its_cap_as_if_complete(graph: Graph, monkeypatch: pytest.MonkeyPatch) -> None:
    assert mail_delta.FILTERED_ROUND_CAP == 5000  # CONTRACT.md section 7
    monkeypatch.setattr(mail_delta, "FILTERED_ROUND_CAP", 2)
    ids = [graph.deliver(subject=f"m{n}")["id"] for n in range(3)]
    for n, message_id in enumerate(ids):
        received_at(graph, message_id, T0 + dt.timedelta(minutes=n))
    answer = graph.get(DELTA, params={"$filter": "receivedDateTime ge 2020-11-30T00:00:00Z"}, prefer=(IMMUTABLE,))
    assert [m["id"] for m in answer.json()["value"]] == ids[1:]  # the newest two (the emulator's assumption)
    assert "@odata.deltaLink" in answer.json()


def test_a_filtered_delta_still_reports_changes_to_messages_received_before_its_time(graph: Graph) -> None:
    """CONTRACT.md section 7 is silent on it; the emulator's assumption (mail_delta's docstring, after
    microsoft-graph-docs-contrib#9760): the filter bounds the first round only, so a later round reports a read
    state change to an older message. The product must not rely on the filter for R8."""
    older = graph.deliver(subject="while disconnected")["id"]
    received_at(graph, older, T0)
    pages, delta_link = run_round(graph, DELTA, **{"$filter": "receivedDateTime ge 2020-11-30T10:00:00Z"})
    assert [m["id"] for p in pages for m in p] == []  # the first round: only what the filter admits
    answer = graph.control("PATCH", f"mail/{graph.mailbox.address}/messages/{older}", json={"is_read": True})
    assert answer.status_code == 200, answer.text
    pages, _ = run_round(graph, delta_link)
    assert [m["id"] for p in pages for m in p] == [older]


# -- CONTRACT.md section 4, "List paging": a list query pages a received-time window without delta's cap --------
LIST = "/me/mailFolders/inbox/messages"


def test_a_list_query_filters_a_received_window_newest_first_and_pages_past_delta_s_cap(
    graph: Graph, monkeypatch: pytest.MonkeyPatch
) -> None:
    """user-list-messages.md (cited in devtools/emulator/mail_list.py): $filter on a receivedDateTime range,
    $orderby receivedDateTime desc, $top and nextLink; the 5,000 cap is delta's (section 7), not a list's."""
    monkeypatch.setattr(mail_delta, "FILTERED_ROUND_CAP", 2)
    ids = [graph.deliver(subject=f"m{n}")["id"] for n in range(5)]
    for n, message_id in enumerate(ids):
        received_at(graph, message_id, T0 + dt.timedelta(minutes=n))
    window = "receivedDateTime ge 2020-11-30T09:01:00Z and receivedDateTime lt 2020-11-30T09:04:00Z"
    params = {"$filter": window, "$orderby": "receivedDateTime desc", "$top": "2", "$select": "id,receivedDateTime"}
    first = graph.get(LIST, params=params)
    assert first.status_code == 200, first.text
    rest = graph.get(first.json()["@odata.nextLink"]).json()
    assert [m["id"] for m in first.json()["value"] + rest["value"]] == [ids[3], ids[2], ids[1]]
    assert "@odata.nextLink" not in rest


def test_a_list_orderby_not_leading_the_filter_is_inefficient(graph: Graph) -> None:
    """user-list-messages.md, "Using filter and orderby in the same query": 400 InefficientFilter."""
    params = {"$filter": "isRead eq false and receivedDateTime ge 2020-11-30T00:00:00Z", "$orderby": "receivedDateTime"}
    answer = graph.get(LIST, params=params)
    assert (answer.status_code, answer.json()["error"]["code"]) == (400, "InefficientFilter")
    params["$filter"] = "receivedDateTime ge 2020-11-30T00:00:00Z and isRead eq false"
    assert graph.get(LIST, params=params).status_code == 200


def test_a_list_filter_the_emulator_cannot_evaluate_is_refused_naming_it(graph: Graph) -> None:
    answer = graph.get(LIST, params={"$filter": "subject eq 'x'"})
    assert answer.status_code == 400
    assert "$filter" in answer.json()["error"]["message"]


# -- CONTRACT.md section 5: an item attachment's $value is MIME, larger than its size once it carries a file ------
def test_an_attached_email_s_value_is_its_mime_with_its_file_in_base64_larger_than_its_size(graph: Graph) -> None:
    """The emulator's assumption (mail_store's docstring): size counts the item as stored, $value encodes its file
    in base64 (RFC 2045 section 6.8), so a client capping stored bytes must measure the MIME."""
    inbound = graph.deliver(attachments=[{"kind": "item", "name": "Earlier note", "size": 30_000}])
    [listed] = graph.get(f"/me/messages/{inbound['id']}/attachments").json()["value"]
    value = graph.get(f"/me/messages/{inbound['id']}/attachments/{listed['id']}/$value")
    assert value.headers["Content-Type"].startswith("message/rfc822")
    assert 30_000 < listed["size"] < len(value.content)  # a third larger, and more
    item = email.message_from_bytes(value.content, policy=email.policy.default)
    [carried] = [part for part in item.iter_attachments()]  # type: ignore[attr-defined]
    assert carried.get_content() == generated_content("Earlier note", 30_000)


# -- CONTRACT.md section 4: no internetMessageHeaders on the Sent Items copy; they are in its MIME ($value) -------
def sent_reply(graph: Graph, **spec: object) -> dict[str, object]:
    """The owner replies in Outlook to a contact's message: the Sent Items copy, as the control endpoint shows it."""
    inbound = graph.deliver(subject="Trial lesson")
    body = {"message_id": inbound["id"], "body_text": "See you then", **spec}
    answer = graph.control("POST", f"mail/{graph.mailbox.address}/reply", json=body)
    assert answer.status_code == 201, answer.text
    return {**answer.json(), "inbound": inbound}


def test_the_sent_items_copy_has_no_internet_message_headers_even_when_selected(graph: Graph) -> None:
    reply = sent_reply(graph)
    selected = graph.get(f"/me/messages/{reply['id']}", params={"$select": "internetMessageHeaders,subject"})
    assert selected.status_code == 200
    assert "internetMessageHeaders" not in selected.json()
    assert selected.json()["subject"] == "RE: Trial lesson"
    sent = graph.post("/me/messages/" + graph.draft()["id"] + "/send")  # sent through Graph: the same
    assert sent.status_code == 202
    [copy] = [m for m in graph.messages("sentitems") if m["subject"] == "Spring term enrolment"]
    answer = graph.get(f"/me/messages/{copy['id']}", params={"$select": "internetMessageHeaders"})
    assert "internetMessageHeaders" not in answer.json()


def test_a_delivered_copy_keeps_its_headers(graph: Graph, emu: EmulatorServer) -> None:
    colleague = emu.world.add_mailbox("coach@school.example")
    reply = sent_reply(graph, to=[colleague.address])
    [received] = (
        graph_for(emu, colleague)
        .get("/me/mailFolders/inbox/messages", params={"$select": "internetMessageHeaders,internetMessageId"})
        .json()["value"]
    )
    headers = {h["name"].lower(): h["value"] for h in received["internetMessageHeaders"]}
    assert received["internetMessageId"] == reply["internetMessageId"]
    assert headers["in-reply-to"] == reply["inbound"]["internetMessageId"]  # type: ignore[index]


def test_the_mime_of_the_sent_items_copy_carries_its_threading_headers(graph: Graph) -> None:
    reply = sent_reply(graph, subject="Change of plan", new_conversation=True)
    inbound = reply["inbound"]
    assert reply["conversationId"] != inbound["conversationId"]  # type: ignore[index]
    answer = graph.get(f"/me/messages/{reply['id']}/$value")
    assert answer.status_code == 200
    mime = email.message_from_bytes(answer.content, policy=email.policy.default)
    assert mime["Message-ID"] == reply["internetMessageId"]
    assert mime["In-Reply-To"] == inbound["internetMessageId"]  # type: ignore[index]
    assert inbound["internetMessageId"] in mime["References"]  # type: ignore[index]
    assert (mime["Subject"], mime["From"].addresses[0].addr_spec) == ("Change of plan", graph.mailbox.address)
    assert [a.addr_spec for a in mime["To"].addresses] == [CONTACT]
    assert "See you then" in mime.get_body(("plain", "html")).get_content()


def test_the_mime_carries_each_attachment_as_a_part(graph: Graph) -> None:
    data = bytes(range(256)) * 8
    delivered = graph.deliver(attachments=[{"kind": "file", "name": "form.pdf", "content_base64": b64(data)}])
    mime = email.message_from_bytes(
        graph.get(f"/me/messages/{delivered['id']}/$value").content, policy=email.policy.default
    )
    [part] = list(mime.iter_attachments())
    assert (part.get_filename(), part.get_content()) == ("form.pdf", data)
    assert mime["Received"] is not None  # a delivered copy came through transport


def test_a_reply_sent_as_another_address_shows_that_address_as_from_and_sender(graph: Graph) -> None:
    """CONTRACT.md section 11, Send As: "The sender and from properties have the same value"."""
    reply = sent_reply(graph, **{"from": "office@school.example"})
    answer = graph.get(f"/me/messages/{reply['id']}", params={"$select": "from,sender,parentFolderId"}).json()
    assert answer["from"]["emailAddress"]["address"] == answer["sender"]["emailAddress"]["address"]
    assert answer["from"]["emailAddress"]["address"] == "office@school.example"
    assert answer["parentFolderId"] == graph.folder_id("sentitems")


def test_a_reply_sent_on_behalf_of_another_shows_from_that_address_and_sender_the_owner(graph: Graph) -> None:
    """CONTRACT.md section 11, Send on Behalf: from is who it appears to be from, sender the user who sent it; the
    MIME says so with a Sender header (RFC 5322 section 3.6.2)."""
    reply = sent_reply(graph, on_behalf_of="office@school.example")
    answer = graph.get(f"/me/messages/{reply['id']}", params={"$select": "from,sender,parentFolderId"}).json()
    assert answer["from"]["emailAddress"]["address"] == "office@school.example"
    assert answer["sender"]["emailAddress"]["address"] == graph.mailbox.address
    assert answer["parentFolderId"] == graph.folder_id("sentitems")
    mime = email.message_from_bytes(graph.get(f"/me/messages/{reply['id']}/$value").content)
    assert mime["From"] == "office@school.example" and graph.mailbox.address in str(mime["Sender"])


# -- CONTRACT.md section 5: an attachment's size is larger than the file (816 bytes are reported as 1,053) -------
def test_an_attachments_size_is_larger_than_its_bytes(graph: Graph) -> None:
    data = bytes(range(204)) * 4  # 816 bytes
    delivered = graph.deliver(attachments=[{"kind": "file", "name": "note.txt", "content_base64": b64(data)}])
    [listed] = graph.get(f"/me/messages/{delivered['id']}/attachments", params={"$select": "name,size"}).json()["value"]
    assert listed["size"] == 1053
    value = graph.get(f"/me/messages/{delivered['id']}/attachments/{listed['id']}/$value")
    assert value.content == data  # the bytes are only known from $value (or contentBytes)
    expanded = graph.get(
        f"/me/messages/{delivered['id']}", params={"$expand": "attachments($select=name,size)"}
    ).json()["attachments"]
    assert [a["size"] for a in expanded] == [1053]
