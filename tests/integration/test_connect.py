"""Connect, Update Email, disconnect, token health and subscription upkeep, end to end (issue 3).

Through the HTTP and queue functions on the local host, against Azurite, the Graph + identity emulator and
the real MSAL. What is asserted is what a user or an operator would see: rows, bytes at rest, the emulator's
subscriptions and request log, the connections read API.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import replace
from urllib.parse import parse_qs, urlsplit

import msal

from devtools.emulator.mail_store import MailStore
from sync_core.clock import FixedClock
from sync_core.connections import Status
from sync_core.services import Services
from sync_core.subscriptions import Subscription, create_request
from sync_core.upkeep import RENEW, UpkeepReport, handle_lifecycle, schedule_renewals
from tests.integration.conftest import RETURN_URL, Stack, refusing, wait_until


def connections(stack: Stack, user_id: str) -> list[dict[str, object]]:
    response = stack.enrollio.call("GET", f"/api/users/{user_id}/connections")
    assert response.status_code == 200, response.text
    return list(response.json()["connections"])


def live_subscription_ids(stack: Stack, connection_id: str) -> list[str]:
    ids = [s.subscription_id for s in stack.services.subscriptions.for_connection(connection_id)]
    return [i for i in ids if stack.emulator.subscriptions.get(i) is not None]


def test_connect_stores_the_connection_an_encrypted_token_cache_and_a_validated_subscription(
    stack: Stack, user_id: str
) -> None:
    address = stack.new_mailbox("teacher")
    stack.emulator.log.clear()
    outcome = stack.connect(user_id, address)
    assert outcome["address"] == address

    [connection] = connections(stack, user_id)
    assert (connection["address"], connection["status"], connection["active"]) == (address, "active", True)
    assert connection["subscription_expires_at"] is not None

    # The token cache at rest does not contain the refresh token in clear.
    cid = outcome["connection_id"]
    raw = stack.services.token_caches.raw(cid)
    assert raw is not None
    cache = json.loads(stack.services.token_caches.load(cid) or "{}")
    [refresh] = [rt["secret"] for rt in cache["RefreshToken"].values()]
    assert refresh.encode() not in raw
    assert b"RefreshToken" not in raw

    # A live subscription on the emulator for the whole mailbox, pointing at our two webhooks...
    [sid] = live_subscription_ids(stack, cid)
    sub = stack.emulator.subscriptions.get(sid)
    assert sub is not None
    mailbox = stack.world.mailbox(address)
    assert mailbox is not None
    assert sub.resource == f"users/{mailbox.id}/messages"  # as Graph echoes it (CONTRACT.md 1.1)
    assert sub.notification_url == f"{stack.enrollio.base_url}/api/graph/notifications"
    assert sub.lifecycle_url == f"{stack.enrollio.base_url}/api/graph/lifecycle"
    assert sub.immutable_ids
    # ...created only after Graph's validation handshake reached both (the emulator refuses otherwise, 400).
    created = [e for e in stack.emulator.log.snapshot() if e.route == "POST /subscriptions"]
    assert [e.status for e in created] == [201]


def test_update_email_keeps_the_previous_connection_and_its_subscription(stack: Stack, user_id: str) -> None:
    first, second = stack.new_mailbox("alice.school"), stack.new_mailbox("alice.studio")
    old = stack.connect(user_id, first)["connection_id"]
    new = stack.connect(user_id, second)["connection_id"]
    listed = {c["address"]: c for c in connections(stack, user_id)}
    assert listed[second]["status"] == "active"
    assert listed[first]["status"] == "connected"
    assert len(listed) == 2
    assert len(live_subscription_ids(stack, old)) == 1
    assert len(live_subscription_ids(stack, new)) == 1


def test_reconnecting_the_same_mailbox_updates_the_connection_and_renews_its_subscription(
    stack: Stack, user_id: str
) -> None:
    address = stack.new_mailbox("again")
    first = stack.connect(user_id, address)["connection_id"]
    [sid] = live_subscription_ids(stack, first)
    since = time.time()
    second = stack.connect(user_id, address)["connection_id"]
    assert second == first
    assert len(connections(stack, user_id)) == 1
    # The mailbox keeps its one subscription (a second would be a 409): renewed, which also reauthorizes it.
    assert live_subscription_ids(stack, first) == [sid]
    assert lifecycle_routes(stack, since) == ["PATCH /subscriptions/{id}"]


def test_disconnect_removes_the_subscription_and_tokens_and_says_disconnected(stack: Stack, user_id: str) -> None:
    cid = stack.connect(user_id, stack.new_mailbox("leaving"))["connection_id"]
    [sid] = live_subscription_ids(stack, cid)
    response = stack.enrollio.call("POST", "/api/outlook/disconnect", body={"user_id": user_id, "connection_id": cid})
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "disconnected"
    assert stack.emulator.subscriptions.get(sid) is None
    assert stack.services.token_caches.raw(cid) is None
    assert stack.services.subscriptions.for_connection(cid) == []
    [listed] = connections(stack, user_id)
    assert listed["status"] == "disconnected"


def test_disconnecting_someone_elses_connection_is_a_403_and_changes_nothing(stack: Stack, user_id: str) -> None:
    owner = f"owner-{user_id}"
    cid = stack.connect(owner, stack.new_mailbox("not.yours"))["connection_id"]
    [sid] = live_subscription_ids(stack, cid)
    theirs = stack.enrollio.call("POST", "/api/outlook/disconnect", body={"user_id": user_id, "connection_id": cid})
    assert theirs.status_code == 403, theirs.text
    # An id that is nobody's answers the same: the answer does not tell which connection ids exist.
    nobodys = stack.enrollio.call("POST", "/api/outlook/disconnect", body={"user_id": user_id, "connection_id": "x"})
    assert nobodys.status_code == 403
    assert theirs.json()["message"].replace(cid, "x") == nobodys.json()["message"]
    [listed] = connections(stack, owner)
    assert listed["status"] == "active"
    assert stack.emulator.subscriptions.get(sid) is not None
    assert stack.services.token_caches.raw(cid) is not None


def test_disconnect_with_a_bad_body_is_a_400_naming_the_field(stack: Stack, user_id: str) -> None:
    bad = stack.enrollio.call("POST", "/api/outlook/disconnect", body={"user_id": user_id})
    assert bad.status_code == 400
    assert bad.json()["fields"][0]["field"] == "connection_id"


def test_forged_expired_and_off_list_links_are_refused_and_store_nothing(stack: Stack, user_id: str) -> None:
    address = stack.new_mailbox("forged")
    browser = stack.browser()
    forged = stack.enrollio.connect_link(user_id, login_hint=address).replace(f"user_id={user_id}", "user_id=victim")
    expired = stack.enrollio.connect_link(user_id, login_hint=address, ttl=-5)
    off_list = stack.enrollio.connect_link(user_id, login_hint=address, return_url="https://evil.example/steal")
    assert browser.get(forged, allow_redirects=False).status_code == 401
    assert browser.get(expired, allow_redirects=False).status_code == 401
    refused = browser.get(off_list, allow_redirects=False)
    assert refused.status_code == 400
    assert "return_url" in refused.text
    assert connections(stack, user_id) == []
    assert connections(stack, "victim") == []


def test_a_replayed_callback_is_an_error_and_makes_no_second_connection(stack: Stack, user_id: str) -> None:
    address = stack.new_mailbox("replay")
    browser = stack.browser()
    action, fields = stack.consent(stack.enrollio.connect_link(user_id, login_hint=address), browser)
    assert "code" in fields  # form_post: the code travels in the POST body, not the URL
    assert browser.post(action, data=fields, allow_redirects=False).headers["Location"].startswith(RETURN_URL)
    replayed = browser.post(action, data=fields, allow_redirects=False)
    assert replayed.status_code == 400
    assert "already used" in replayed.text
    assert len(connections(stack, user_id)) == 1


def test_consent_denied_returns_the_reason_and_stores_nothing(stack: Stack, user_id: str) -> None:
    address = stack.new_mailbox("denies")
    stack.emulator.identity.queue_consent(address, approve=False)
    response = stack.sign_in(stack.enrollio.connect_link(user_id, login_hint=address))
    outcome = parse_qs(urlsplit(response.headers["Location"]).query)
    assert outcome["outcome"] == ["error"]
    assert outcome["reason"] == ["access_denied"]
    assert connections(stack, user_id) == []


def test_a_revoked_grant_shows_needs_reconnect_after_the_next_graph_call(stack: Stack, user_id: str) -> None:
    address = stack.new_mailbox("revoked")
    cid = stack.connect(user_id, address)["connection_id"]
    mailbox = stack.world.mailbox(address)
    assert mailbox is not None
    stack.emulator.identity.revoke(mailbox.id)
    stack.emulator.identity.expire_access_tokens(mailbox.id)
    # Revoking is a documented trigger of reauthorizationRequired; handling it is the next Graph call.
    wait_until(
        lambda: connections(stack, user_id)[0]["status"] == "needs_reconnect",
        what="the connection to read needs_reconnect",
    )
    [listed] = connections(stack, user_id)
    assert "invalid_grant" in str(listed["status_reason"])
    assert cid == listed["connection_id"]


def _fixed(stack: Stack) -> Services:
    return Services(stack.settings, FixedClock(dt.datetime.now(dt.UTC)))


def renew_now(subscription_id: str, services: Services) -> UpkeepReport:
    """What the lifecycle worker does with the renewal timer's event for ``subscription_id``."""
    return handle_lifecycle(json.dumps({"subscription_id": subscription_id, "event": RENEW}), services)


def test_the_renewal_timer_renews_exactly_the_subscriptions_inside_its_window(stack: Stack, user_id: str) -> None:
    services = _fixed(stack)
    now = services.clock.now()
    soon_cid = stack.connect(user_id, stack.new_mailbox("renew.soon"))["connection_id"]
    later_cid = stack.connect(user_id, stack.new_mailbox("renew.later"))["connection_id"]
    [soon] = services.subscriptions.for_connection(soon_cid)
    [later] = services.subscriptions.for_connection(later_cid)
    services.subscriptions.save(replace(soon, expires_at=now + dt.timedelta(hours=2)))
    services.subscriptions.save(replace(later, expires_at=now + dt.timedelta(days=3)))
    stack.emulator.log.clear()
    queued = schedule_renewals(services)  # the lifecycle worker on the local host renews what it queues
    assert soon.subscription_id in queued
    assert later.subscription_id not in queued

    def patched() -> set[str]:
        return {
            e.path.rsplit("/", 1)[-1] for e in stack.emulator.log.snapshot() if e.route == "PATCH /subscriptions/{id}"
        }

    wait_until(lambda: soon.subscription_id in patched(), what="the renewal at Graph")
    stack.settle()
    assert later.subscription_id not in patched()

    def renewed() -> Subscription | None:  # the lifetime Graph granted, recorded: 4 to 7 days (spread)
        row = services.subscriptions.get(soon.subscription_id)
        return row if row is not None and row.expires_at > now + dt.timedelta(days=3, hours=23) else None

    row = wait_until(renewed, what="the renewed expiry recorded")
    assert row.expires_at <= now + dt.timedelta(minutes=10_080)


def test_renewing_a_subscription_graph_dropped_creates_a_new_one_and_asks_for_a_catch_up(
    stack: Stack, user_id: str
) -> None:
    services = _fixed(stack)
    cid = stack.connect(user_id, stack.new_mailbox("renew.gone"))["connection_id"]
    [sub] = services.subscriptions.for_connection(cid)
    connection = services.connections.get(user_id, cid)
    assert connection is not None
    # Gone at Graph, without a lifecycle event (whose handling would race this test): the PATCH will 404.
    services.graph_for(connection).request("DELETE", f"/subscriptions/{sub.subscription_id}")
    report = renew_now(sub.subscription_id, services)
    [new_sid] = live_subscription_ids(stack, cid)
    assert new_sid != sub.subscription_id
    assert report.recreated == [new_sid]
    assert cid in report.catchups
    assert services.subscriptions.get(sub.subscription_id) is None


def lifecycle_routes(stack: Stack, since: float) -> list[str]:
    return [e.route for e in stack.emulator.log.snapshot() if e.at >= since and "subscriptions" in e.route]


def delta_folders(stack: Stack, since: float) -> set[str]:
    """The folders delta rounds read since ``since``, by well-known name (a deltaLink names the folder by id)."""
    names = {}
    for box in MailStore.of(stack.world).boxes.values():
        names.update({folder.id.lower(): folder.well_known for folder in box.folders.values()})
    folders = {
        e.path.split("/")[-3].lower()
        for e in stack.emulator.log.snapshot()
        if e.at >= since and e.path.endswith("/messages/delta")
    }
    return {names.get(f, f) for f in folders}


def test_each_lifecycle_event_leads_to_the_documented_action(stack: Stack, user_id: str) -> None:
    cid = stack.connect(user_id, stack.new_mailbox("lifecycle"))["connection_id"]
    [sub] = stack.services.subscriptions.for_connection(cid)

    # reauthorizationRequired -> a renewal PATCH (which reauthorizes too), then delta for the paused window.
    since = time.time()
    stack.emulator.subscriptions.lifecycle(sub.subscription_id, "reauthorizationRequired")
    wait_until(lambda: "PATCH /subscriptions/{id}" in lifecycle_routes(stack, since), what="the renewal PATCH")
    wait_until(
        lambda: {"inbox", "sentitems"} <= delta_folders(stack, since),
        what="a delta round over Inbox and Sent Items",
    )
    stack.settle()

    # missed -> a full resync through delta, per folder (Inbox and Sent Items).
    since = time.time()
    stack.emulator.subscriptions.lifecycle(sub.subscription_id, "missed")
    wait_until(
        lambda: {"inbox", "sentitems"} <= delta_folders(stack, since),
        what="a delta round over Inbox and Sent Items",
    )

    # subscriptionRemoved -> a new subscription (POST), then a catch-up for the gap.
    since = time.time()
    stack.emulator.subscriptions.lifecycle(sub.subscription_id, "subscriptionRemoved")
    wait_until(lambda: "POST /subscriptions" in lifecycle_routes(stack, since), what="the re-created subscription")
    wait_until(lambda: live_subscription_ids(stack, cid), what="the new subscription recorded")
    [new_sid] = live_subscription_ids(stack, cid)
    assert new_sid != sub.subscription_id


def test_a_lifecycle_event_for_an_unknown_subscription_is_dropped(stack: Stack) -> None:
    report = handle_lifecycle(json.dumps({"subscription_id": "nope", "event": "missed"}), stack.services)
    assert report.dropped == ["nope"]


def test_enrollio_calls_without_a_valid_signature_are_401(stack: Stack, user_id: str) -> None:
    unsigned = stack.enrollio.call("GET", f"/api/users/{user_id}/connections", sign=False)
    assert unsigned.status_code == 401
    stale = stack.enrollio.call(
        "GET",
        f"/api/users/{user_id}/connections",
        sign=False,
        headers={"X-Enrollio-Timestamp": str(int(time.time()) - 3600), "X-Enrollio-Signature": "v1=00"},
    )
    assert stale.status_code == 401
    assert "replay window" in stale.json()["message"]


def test_the_msal_cache_is_usable_after_reload(stack: Stack, user_id: str) -> None:
    """The stored cache holds the signed-in account, so silent token acquisition can find it."""
    cid = stack.connect(user_id, stack.new_mailbox("reload"))["connection_id"]
    cache = msal.SerializableTokenCache()
    cache.deserialize(stack.services.token_caches.load(cid) or "")
    [account] = list(cache.search(msal.TokenCache.CredentialType.ACCOUNT))
    stored = stack.services.connections.get(user_id, cid)
    assert stored is not None
    assert stored.home_account_id == account["home_account_id"]
    assert stored.status is Status.CONNECTED


def test_a_subscription_graph_refuses_leaves_no_new_connection_and_marks_an_existing_one(
    stack: Stack, user_id: str
) -> None:
    fresh, existing = stack.new_mailbox("refused.fresh"), stack.new_mailbox("refused.existing")
    cid = stack.connect(user_id, existing)["connection_id"]
    connection = stack.services.connections.get(user_id, cid)
    assert connection is not None
    [gone] = stack.services.subscriptions.for_connection(cid)  # dropped by Graph: signing in again must create one
    stack.services.graph_for(connection).request("DELETE", f"/subscriptions/{gone.subscription_id}")
    with refusing():
        first = stack.sign_in(stack.enrollio.connect_link(user_id, login_hint=fresh))
        again = stack.sign_in(stack.enrollio.connect_link(user_id, login_hint=existing))
    for response in (first, again):
        outcome = parse_qs(urlsplit(response.headers["Location"]).query)
        assert (outcome["outcome"], outcome["reason"]) == (["error"], ["subscription_failed"])
    listed = {c["address"]: c for c in connections(stack, user_id)}
    assert fresh not in listed  # nothing half-written
    assert listed[existing]["status"] == "needs_reconnect"  # visible, not a silent stop
    assert "subscription_failed" in str(listed[existing]["status_reason"])
    assert stack.services.token_caches.raw(cid) is not None


def test_reconnecting_while_an_old_subscription_is_still_alive_at_graph_works(stack: Stack, user_id: str) -> None:
    address = stack.new_mailbox("leftover")
    cid = stack.connect(user_id, address)["connection_id"]
    connection = stack.services.connections.get(user_id, cid)
    assert connection is not None
    [old] = stack.services.subscriptions.for_connection(cid)
    # Forgotten here, alive at Graph (a disconnect that could not reach Graph): its clientState is lost with it.
    stack.services.subscriptions.delete(old.subscription_id)
    forget_mailbox_row(stack, connection.mailbox)
    leftover = stack.emulator.subscriptions.get(old.subscription_id)
    assert leftover is not None
    # We asked for "/users/{id}/messages"; Graph lists it as "users/{id}/messages" (CONTRACT.md 1.1).
    asked = create_request(leftover.mailbox_id, "https://x.example", "s", dt.datetime.now(dt.UTC))["resource"]
    assert (asked, leftover.resource) == (f"/users/{leftover.mailbox_id}/messages", asked[1:])
    stack.connect(user_id, address)  # Graph answers 409 first; the leftover is removed and ours created
    [new] = live_subscription_ids(stack, cid)
    assert new != old.subscription_id
    assert stack.emulator.subscriptions.get(old.subscription_id) is None


def forget_mailbox_row(stack: Stack, mailbox: str) -> None:
    record = stack.services.mailboxes.get(mailbox)
    assert record is not None and stack.services.mailboxes.forget(record)


def test_a_409_for_a_subscription_the_mailbox_does_not_name_replaces_it(stack: Stack, user_id: str) -> None:
    """A subscription of ours recorded here that the mailbox row does not name (a sign-in that raced another and
    lost, or the subscription of a mailbox whose last user is leaving): Graph's 409 finds it; it is not trusted
    with the mailbox, so it is deleted and ours created."""
    address = stack.new_mailbox("unnamed")
    cid = stack.connect(user_id, address)["connection_id"]
    connection = stack.services.connections.get(user_id, cid)
    assert connection is not None
    [old] = stack.services.subscriptions.for_connection(cid)
    forget_mailbox_row(stack, connection.mailbox)
    since = time.time()
    stack.connect(user_id, address)
    assert lifecycle_routes(stack, since) == [
        "POST /subscriptions", "GET /subscriptions", "DELETE /subscriptions/{id}", "POST /subscriptions"
    ]  # fmt: skip
    [new] = live_subscription_ids(stack, cid)
    assert new != old.subscription_id


def test_a_sign_in_finished_in_another_browser_is_refused(stack: Stack, user_id: str) -> None:
    """Someone with a signed link for their own user cannot have a victim attach the victim's mailbox to it."""
    victim = stack.new_mailbox("victim")
    attackers_browser, victims_browser = stack.browser(), stack.browser()
    link = stack.enrollio.connect_link(user_id, login_hint=victim)
    to_microsoft = attackers_browser.get(link, allow_redirects=False).headers["Location"]
    from devtools.stack import parse_auto_post_form

    action, fields = parse_auto_post_form(victims_browser.get(to_microsoft).text)  # the victim signs in
    refused = victims_browser.post(action, data=fields, allow_redirects=False)
    assert refused.status_code == 400
    assert "browser where you started" in refused.text
    assert connections(stack, user_id) == []


def test_reconnecting_a_mailbox_whose_grant_was_lost_keeps_the_active_address(stack: Stack, user_id: str) -> None:
    """R3: signing in again to an older mailbox repairs it without undoing the user's Update Email."""
    old, new = stack.new_mailbox("r3.old"), stack.new_mailbox("r3.new")
    stack.connect(user_id, old)
    stack.connect(user_id, new)  # Update Email: the new address is active
    old_mailbox = stack.world.mailbox(old)
    assert old_mailbox is not None
    stack.emulator.identity.revoke(old_mailbox.id)
    stack.emulator.identity.expire_access_tokens(old_mailbox.id)
    wait_until(
        lambda: {c["address"]: c["status"] for c in connections(stack, user_id)}[old] == "needs_reconnect",
        what="the old mailbox to need reconnecting",
    )
    stack.connect(user_id, old)
    listed = {c["address"]: c for c in connections(stack, user_id)}
    assert (listed[old]["status"], listed[old]["active"]) == ("connected", False)
    assert (listed[new]["status"], listed[new]["active"]) == ("active", True)


def test_signing_in_again_to_an_older_connected_mailbox_switches_back_to_it(stack: Stack, user_id: str) -> None:
    """R3: the user picks the older, still connected address again: the callback says connected with it, and it
    is the one mail goes out from (before, the callback said so while mail kept going out from the newer one)."""
    old, new = stack.new_mailbox("r3.back.old"), stack.new_mailbox("r3.back.new")
    stack.connect(user_id, old)
    stack.connect(user_id, new)  # Update Email: the new address is active
    outcome = stack.connect(user_id, old)  # and back again
    assert (outcome["outcome"], outcome["address"]) == ("connected", old)
    listed = {c["address"]: c for c in connections(stack, user_id)}
    assert (listed[old]["status"], listed[old]["active"]) == ("active", True)
    assert (listed[new]["status"], listed[new]["active"]) == ("connected", False)
    body = {
        "user_id": user_id,
        "account_id": "acct-1",
        "kind": "individual",
        "contact": {"email": "pat.parent@home.example"},
        "subject": "Back to the school address",
        "text": "hello",
    }
    sent = stack.enrollio.call("POST", "/api/send", body=body, headers={"Idempotency-Key": user_id + "-back"})
    assert sent.status_code == 200, sent.text
    assert (sent.json()["route"], sent.json()["from"]) == ("outlook", old)
