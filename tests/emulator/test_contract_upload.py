"""Upload sessions for attachments of 3 MB and more, as CONTRACT.md section 5 describes them.

createUploadSession answers the documented ``uploadSession``; the bytes go to a pre-authenticated URL outside
Graph's path, without a bearer token, in order, at most 4 MB per PUT; intermediate answers carry
``nextExpectedRanges``, the last one is 201 with ``Location``; the session expires; the tenant's message size
limit refuses with ``ErrorMessageSizeExceeded``. Where the contract is silent, the emulator's choices are the
assumptions in ``devtools/emulator/mail_upload.py``'s docstring; these tests pin them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

import pytest
import requests
from msgraph.generated.models.upload_session import UploadSession

from devtools.emulator import EmulatorServer, mail_upload
from devtools.emulator.mail_store import ATTACHMENT_SIZE_OVERHEAD
from tests.emulator.conftest import Graph, b64, graph_for
from tests.emulator.contract_helpers import assert_same_shape, sample, sdk_leftovers

MiB = 1024 * 1024
RANGE = 4 * MiB


def payload(size: int, seed: bytes = b"term schedule") -> bytes:
    return hashlib.shake_256(seed).digest(size)


def session_for(graph: Graph, draft_id: str, size: int, **item: Any) -> requests.Response:
    body = {"AttachmentItem": {"attachmentType": "file", "name": "schedule.pdf", "size": size, **item}}
    return graph.post(f"/me/messages/{draft_id}/attachments/createUploadSession", json=body)


def put(graph: Graph, url: str, data: bytes, start: int, total: int, **headers: str) -> requests.Response:
    """One range PUT as the docs show it: no Authorization header, Content-Range, octet-stream."""
    range_headers = {
        "Content-Range": f"bytes {start}-{start + len(data) - 1}/{total}",
        "Content-Type": "application/octet-stream",
        **headers,
    }
    return graph.session.put(url, data=data, headers=range_headers, timeout=30)


def upload(graph: Graph, url: str, data: bytes, chunk: int = RANGE) -> list[requests.Response]:
    return [put(graph, url, data[i : i + chunk], i, len(data)) for i in range(0, len(data), chunk)]


@pytest.fixture
def draft(graph: Graph) -> dict[str, Any]:
    return graph.draft()


def test_create_upload_session_answers_the_documented_upload_session(graph: Graph, draft: dict[str, Any]) -> None:
    answer = session_for(graph, draft["id"], 3_483_322)
    assert answer.status_code == 201
    body = answer.json()
    assert_same_shape(sample("upload-session-create-response.json"), body)
    assert sdk_leftovers(body, UploadSession) == []
    assert body["nextExpectedRanges"] == ["0-"]
    # Pre-authenticated and outside Graph: a client that sends its token only under the Graph base never sends it.
    assert not body["uploadUrl"].startswith(graph.emu.graph_base_url + "/")
    assert "authtoken=" in body["uploadUrl"]
    expires = dt.datetime.fromisoformat(body["expirationDateTime"].replace("0Z", "+00:00"))
    assert dt.timedelta(hours=1) < expires - dt.datetime.now(dt.UTC) <= dt.timedelta(hours=2)


def test_ranges_in_order_answer_next_expected_ranges_then_201_with_location(
    graph: Graph, draft: dict[str, Any]
) -> None:
    data = payload(10 * MiB + 17)
    url = session_for(graph, draft["id"], len(data), contentType="application/pdf").json()["uploadUrl"]
    answers = upload(graph, url, data)
    assert [a.status_code for a in answers] == [200, 200, 201]
    assert [a.json()["nextExpectedRanges"] for a in answers[:2]] == [[str(RANGE)], [str(2 * RANGE)]]
    final = answers[-1]
    assert final.content == b""
    attachment_id = final.headers["Location"].rsplit("Attachments('", 1)[1].rstrip("')")
    value = graph.get(f"/me/messages/{draft['id']}/attachments/{attachment_id}/$value")
    assert hashlib.sha256(value.content).hexdigest() == hashlib.sha256(data).hexdigest()
    meta = graph.get(f"/me/messages/{draft['id']}/attachments/{attachment_id}").json()
    assert (meta["name"], meta["size"], meta["contentType"], meta["isInline"]) == (
        "schedule.pdf",
        len(data) + ATTACHMENT_SIZE_OVERHEAD,  # Graph's size counts Exchange's overhead (CONTRACT.md section 5)
        "application/pdf",
        False,
    )
    assert graph.post(f"/me/messages/{draft['id']}/send").status_code == 202
    [delivery] = graph.control("GET", "mail/outbound").json()["value"]
    assert [a["sha256"] for a in delivery["attachments"]] == [hashlib.sha256(data).hexdigest()]


def test_an_inline_attachment_keeps_its_content_id(graph: Graph, draft: dict[str, Any]) -> None:
    data = payload(3 * MiB, b"poster")
    answer = session_for(graph, draft["id"], len(data), isInline=True, contentId="poster@enrollio", name="poster.png")
    upload(graph, answer.json()["uploadUrl"], data)
    cast = "microsoft.graph.fileAttachment/contentId"
    [listed] = graph.get(
        f"/me/messages/{draft['id']}", params={"$expand": f"attachments($select=name,isInline,{cast})"}
    ).json()["attachments"]
    assert (listed["name"], listed["isInline"], listed["contentId"]) == ("poster.png", True, "poster@enrollio")


def test_the_upload_url_takes_no_bearer_token(graph: Graph, draft: dict[str, Any]) -> None:
    data = payload(3 * MiB)
    url = session_for(graph, draft["id"], len(data)).json()["uploadUrl"]
    with_token = put(graph, url, data, 0, len(data), Authorization=f"Bearer {graph.token}")
    assert with_token.status_code == 401
    assert "Authorization" in with_token.json()["error"]["message"]
    forged = put(graph, url.split("authtoken=")[0] + "authtoken=forged", data, 0, len(data))
    assert forged.status_code == 401
    assert put(graph, url, data, 0, len(data)).status_code == 201  # nothing was taken from the refused PUTs


def test_ranges_out_of_order_repeated_or_over_4_mb_are_refused(graph: Graph, draft: dict[str, Any]) -> None:
    data = payload(9 * MiB)
    url = session_for(graph, draft["id"], len(data)).json()["uploadUrl"]
    skipped = put(graph, url, data[RANGE : 2 * RANGE], RANGE, len(data))
    assert (skipped.status_code, skipped.json()["error"]["code"]) == (416, "InvalidRange")
    assert "byte 0" in skipped.json()["error"]["message"]
    too_big = put(graph, url, data[: RANGE + 1], 0, len(data))
    assert (too_big.status_code, too_big.json()["error"]["code"]) == (413, "RequestEntityTooLarge")
    wrong_total = put(graph, url, data[:RANGE], 0, len(data) + 1)
    assert (wrong_total.status_code, wrong_total.json()["error"]["code"]) == (400, "InvalidContentRange")
    no_range = graph.session.put(url, data=data[:10], timeout=30)
    assert no_range.status_code == 400
    assert put(graph, url, data[:RANGE], 0, len(data)).status_code == 200
    repeated = put(graph, url, data[:RANGE], 0, len(data))
    assert repeated.status_code == 416  # a range is taken once: a repeat is out of order too
    assert [a.status_code for a in upload_rest(graph, url, data, RANGE)] == [200, 201]


def upload_rest(graph: Graph, url: str, data: bytes, start: int) -> list[requests.Response]:
    return [put(graph, url, data[i : i + RANGE], i, len(data)) for i in range(start, len(data), RANGE)]


def test_the_session_expires_at_its_expiration_date_time(graph: Graph, draft: dict[str, Any]) -> None:
    data = payload(5 * MiB)
    created = session_for(graph, draft["id"], len(data)).json()
    first = put(graph, created["uploadUrl"], data[:RANGE], 0, len(data))
    assert first.json()["ExpirationDateTime"] == created["expirationDateTime"]  # PUTs do not extend it
    assert graph.control("POST", "mail/upload-sessions/expire").status_code == 204
    expired = put(graph, created["uploadUrl"], data[RANGE:], RANGE, len(data))
    assert (expired.status_code, expired.json()["error"]["code"]) == (401, "InvalidAuthenticationToken")
    assert graph.get(f"/me/messages/{draft['id']}/attachments").json()["value"] == []


def test_a_cancelled_session_is_gone_and_attached_nothing(graph: Graph, draft: dict[str, Any]) -> None:
    data = payload(5 * MiB)
    url = session_for(graph, draft["id"], len(data)).json()["uploadUrl"]
    assert put(graph, url, data[:RANGE], 0, len(data)).status_code == 200
    assert graph.session.delete(url, timeout=30).status_code == 204
    assert put(graph, url, data[RANGE:], RANGE, len(data)).status_code == 404
    assert graph.get(f"/me/messages/{draft['id']}/attachments").json()["value"] == []


@pytest.mark.parametrize(
    ("size", "code"),
    [
        (2 * MiB - 1, "ErrorAttachmentSizeShouldNotBeLessThanMinimumSize"),
        (150 * MiB + 1, "ErrorAttachmentSizeLimitExceeded"),
    ],
)
def test_a_session_is_for_2_mib_to_150_mb(graph: Graph, draft: dict[str, Any], size: int, code: str) -> None:
    answer = session_for(graph, draft["id"], size)
    assert (answer.status_code, answer.json()["error"]["code"]) == (400, code)


def test_the_tenant_message_size_limit_refuses_part_way_through_the_upload(graph: Graph, draft: dict[str, Any]) -> None:
    assert graph.control("GET", "mail/limits").json() == {"max_message_bytes": 35 * MiB}  # the default
    assert graph.control("POST", "mail/limits", json={"max_message_bytes": 6 * MiB}).status_code == 200
    data = payload(7 * MiB)
    url = session_for(graph, draft["id"], len(data)).json()["uploadUrl"]  # accepted for the whole size
    assert put(graph, url, data[:RANGE], 0, len(data)).status_code == 200
    refused = put(graph, url, data[RANGE:], RANGE, len(data))
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "ErrorMessageSizeExceeded"
    assert refused.json()["error"]["message"] == "The message exceeds the maximum supported size."
    assert put(graph, url, data[RANGE:], RANGE, len(data)).status_code == 404  # the session is gone
    graph.control("POST", "mail/limits", json={"max_message_bytes": 3 * MiB})  # every way in counts
    small = {"@odata.type": "#microsoft.graph.fileAttachment", "name": "a.bin", "contentBytes": b64(payload(2 * MiB))}
    assert graph.post(f"/me/messages/{draft['id']}/attachments", json=small).status_code == 201
    again = graph.post(f"/me/messages/{draft['id']}/attachments", json={**small, "name": "b.bin"})
    assert again.json()["error"]["code"] == "ErrorMessageSizeExceeded"
    assert [a["name"] for a in graph.get(f"/me/messages/{draft['id']}/attachments").json()["value"]] == ["a.bin"]


def test_the_size_limit_counts_the_encoded_size_not_the_raw_bytes(graph: Graph, draft: dict[str, Any]) -> None:
    # CONTRACT.md section 5: "Exchange counts a message's encoded size". Base64 in 76-character lines: x 1.37.
    graph.control("POST", "mail/limits", json={"max_message_bytes": 8 * MiB})
    fits, over = payload(5 * MiB + MiB // 2, b"fits"), payload(6 * MiB + MiB // 2, b"over")  # both under 8 MiB raw
    url = session_for(graph, draft["id"], len(fits)).json()["uploadUrl"]
    assert [a.status_code for a in upload(graph, url, fits)] == [200, 201]  # 7.5 MiB encoded
    second = graph.draft()
    url = session_for(graph, second["id"], len(over)).json()["uploadUrl"]
    answers = upload(graph, url, over)
    assert [a.status_code for a in answers] == [200, 400]  # 8.9 MiB encoded: refused part-way
    assert answers[-1].json()["error"]["code"] == "ErrorMessageSizeExceeded"
    graph.control("POST", "mail/limits", json={"max_message_bytes": 35 * MiB})
    assert (mail_upload.encoded_size(3), mail_upload.encoded_size(57), mail_upload.encoded_size(58)) == (6, 78, 84)


def test_faults_apply_to_upload_urls_and_puts_are_counted_per_mailbox(graph: Graph, draft: dict[str, Any]) -> None:
    data = payload(9 * MiB)
    url = session_for(graph, draft["id"], len(data)).json()["uploadUrl"]
    graph.emu.faults.configure(
        fail_paths={"AttachmentSessions": {"status": 503, "method": "PUT", "after": 1, "times": 1}},
        retry_after_seconds=0.5,
    )
    graph.emu.log.clear()
    assert put(graph, url, data[:RANGE], 0, len(data)).status_code == 200
    refused = put(graph, url, data[RANGE : 2 * RANGE], RANGE, len(data))
    assert (refused.status_code, refused.headers["Retry-After"]) == (503, "0.5")
    assert [a.status_code for a in upload_rest(graph, url, data, RANGE)] == [200, 201]  # the refused range again
    counts = graph.emu.log.counts()[graph.mailbox.id]
    assert counts["PUT /api/v2.0/Users/{id}/Messages/{id}/AttachmentSessions/{id}"] == 4


def test_uploads_over_150_mb_per_5_minutes_are_throttled(
    graph: Graph, draft: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mail_upload, "UPLOAD_THROTTLE_BYTES", 6 * MiB)  # 150,000,000 bytes in the real service
    data = payload(8 * MiB)
    url = session_for(graph, draft["id"], len(data)).json()["uploadUrl"]
    assert put(graph, url, data[:RANGE], 0, len(data)).status_code == 200
    throttled = put(graph, url, data[RANGE:], RANGE, len(data))
    assert throttled.status_code == 429
    assert 290 < float(throttled.headers["Retry-After"]) <= 300
    assert_same_shape(sample("error-429-too-many-requests.json"), throttled.json())


def test_the_upload_throttle_counts_every_patch_post_and_put(
    graph: Graph, draft: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # CONTRACT.md section 8: "150 MB upload (PATCH/POST/PUT) per 5 minutes", not only the upload sessions' PUTs.
    monkeypatch.setattr(mail_upload, "UPLOAD_THROTTLE_BYTES", 5 * MiB)
    small = {"@odata.type": "#microsoft.graph.fileAttachment", "name": "a.bin", "contentBytes": b64(payload(2 * MiB))}
    assert graph.post(f"/me/messages/{draft['id']}/attachments", json=small).status_code == 201  # 2.7 MiB of JSON
    data = payload(4 * MiB)
    url = session_for(graph, draft["id"], len(data)).json()["uploadUrl"]
    throttled = put(graph, url, data, 0, len(data))
    assert throttled.status_code == 429
    assert graph.post("/me/messages", json={"subject": "x" * 3 * MiB}).status_code == 429  # a draft's POST too
    assert graph.get(f"/me/messages/{draft['id']}").status_code == 200  # reading does not


def test_a_request_body_over_4_mb_is_refused(graph: Graph) -> None:
    answer = graph.post("/me/messages", json={"body": {"contentType": "text", "content": "x" * (4 * MiB)}})
    assert (answer.status_code, answer.json()["error"]["message"]) == (400, "Maximum request length exceeded.")


def test_another_app_cannot_use_a_session_url_with_its_own_token(emu: EmulatorServer, graph: Graph) -> None:
    other = graph_for(emu, emu.world.add_mailbox("someone@school.example"))
    data = payload(3 * MiB)
    draft = graph.draft()
    url = session_for(graph, draft["id"], len(data)).json()["uploadUrl"]
    assert put(other, url, data, 0, len(data), Authorization=f"Bearer {other.token}").status_code == 401
    assert put(graph, url, data, 0, len(data)).status_code == 201
