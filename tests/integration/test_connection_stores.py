"""Connections, subscriptions, OAuth flows and token caches as they are stored in Azurite."""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from concurrent.futures import ThreadPoolExecutor

from sync_core import names
from sync_core.adapters.connection_store import ConnectionStore, MailboxStore, SubscriptionStore
from sync_core.adapters.secrets_store import FlowStore, PendingConnect, TokenCacheStore
from sync_core.adapters.storage import StorageClients
from sync_core.connections import GraphIdentity, Status, on_connected
from sync_core.keyring import Keyring
from sync_core.subscriptions import Subscription

NOW = dt.datetime(2026, 11, 26, 9, 0, tzinfo=dt.UTC)
KEYRING = Keyring.from_setting("k1:" + base64.b64encode(b"x" * 32).decode())


def identity(n: int) -> GraphIdentity:
    return GraphIdentity("tenant", f"oid-{n}", f"user{n}@school.example", f"oid-{n}.tenant")


def test_update_email_is_stored_as_two_connections_with_one_active(storage: StorageClients) -> None:
    store, user = ConnectionStore(storage.tables), f"user-{uuid.uuid4()}"
    store.save(on_connected([], user, "acct", identity(1), NOW))
    store.save(on_connected(store.for_user(user), user, "acct", identity(2), NOW + dt.timedelta(hours=1)))
    stored = store.for_user(user)
    assert [(c.address, c.active, c.status) for c in stored] == [
        ("user1@school.example", False, Status.CONNECTED),
        ("user2@school.example", True, Status.CONNECTED),
    ]
    assert stored[0].connected_at == NOW


def test_subscription_point_read_and_expiry_query(storage: StorageClients) -> None:
    store = SubscriptionStore(storage.tables)
    soon = Subscription(str(uuid.uuid4()), "t_x", "t", "state", "/users/x/messages", NOW + dt.timedelta(hours=2))
    later = Subscription(str(uuid.uuid4()), "t_x", "t", "state", "/users/x/messages", NOW + dt.timedelta(days=5))
    store.save(soon)
    store.save(later)
    assert store.get(soon.subscription_id) == soon
    due = {s.subscription_id for s in store.expiring_before(NOW + dt.timedelta(hours=3))}
    assert soon.subscription_id in due
    assert later.subscription_id not in due
    store.delete(soon.subscription_id)
    assert store.get(soon.subscription_id) is None


def test_an_oauth_flow_can_be_taken_once_even_by_racing_callbacks(storage: StorageClients) -> None:
    flows, state = FlowStore(storage.tables, KEYRING), str(uuid.uuid4())
    flow = {"state": state, "code_verifier": "v" * 43, "nonce": "n"}
    flows.put(
        PendingConnect(state, "u", "a", "https://app.enrollio.example/done", flow, NOW + dt.timedelta(minutes=10))
    )
    entity = storage.tables.get_table_client(names.TABLE_OAUTH_FLOWS).get_entity(state, "")
    assert b"v" * 43 not in bytes(entity["Flow"])  # the PKCE verifier is sealed at rest
    with ThreadPoolExecutor(8) as pool:
        taken = [r for r in pool.map(lambda _: flows.take(state, NOW), range(8)) if r is not None]
    assert len(taken) == 1
    assert taken[0].flow == flow
    assert flows.take(state, NOW) is None


def test_an_expired_or_unknown_flow_is_not_taken(storage: StorageClients) -> None:
    flows, state = FlowStore(storage.tables, KEYRING), str(uuid.uuid4())
    flows.put(PendingConnect(state, "u", "a", "https://r", {}, NOW + dt.timedelta(minutes=10)))
    assert flows.take(state, NOW + dt.timedelta(minutes=11)) is None
    assert flows.take("never-issued", NOW) is None


def test_token_caches_are_encrypted_at_rest_and_deleted_on_request(storage: StorageClients) -> None:
    caches, cid = TokenCacheStore(storage.blobs, KEYRING), uuid.uuid4().hex
    cache = '{"RefreshToken": {"k": {"secret": "0.AAA-this-is-the-refresh-token"}}}'
    caches.save(cid, cache)
    raw = caches.raw(cid)
    assert raw is not None
    assert b"refresh-token" not in raw
    assert caches.load(cid) == cache
    caches.delete(cid)
    assert caches.load(cid) is None


def test_a_mailbox_is_one_partition_holding_its_subscription_and_the_connections_that_share_it(
    storage: StorageClients,
) -> None:
    mailboxes, subscriptions = MailboxStore(storage.tables), SubscriptionStore(storage.tables)
    mailbox = f"t_{uuid.uuid4()}"
    sub = Subscription(str(uuid.uuid4()), mailbox, "t", "state", "/users/x/messages", NOW + dt.timedelta(days=5))
    subscriptions.save(sub)
    mailboxes.join(mailbox, "ana", "conn-a", NOW)
    mailboxes.join(mailbox, "ben", "conn-b", NOW)
    assert mailboxes.point_at(mailbox, sub.subscription_id)
    mailboxes.touch(mailbox, NOW)
    record, members = mailboxes.read(mailbox)
    assert record is not None and (record.subscription_id, record.last_notification_at) == (sub.subscription_id, NOW)
    joined = [(m.user_id, m.connection_id, m.joined_at) for m in members]
    assert joined == [("ana", "conn-a", NOW), ("ben", "conn-b", NOW)]
    assert subscriptions.of_mailbox(mailbox) == sub
    assert subscriptions.for_connection("conn-b") == [sub]
    # Another subscription is named only in place of the one it replaces; the last notification time is kept.
    assert not mailboxes.point_at(mailbox, "other")
    assert mailboxes.point_at(mailbox, "other", replacing=sub.subscription_id)
    record = mailboxes.get(mailbox)
    assert record is not None and (record.subscription_id, record.last_notification_at) == ("other", NOW)
    mailboxes.leave(mailbox, "conn-a")
    mailboxes.leave(mailbox, "conn-a")  # twice: nothing to leave the second time
    assert [m.connection_id for m in mailboxes.members(mailbox)] == ["conn-b"]
    # The mailbox row goes only as it was read: a join since changes it.
    mailboxes.join(mailbox, "cy", "conn-c", NOW)
    assert not mailboxes.forget(record)
    assert mailboxes.get(mailbox) is not None
    current = mailboxes.get(mailbox)
    assert current is not None and mailboxes.forget(current)
    assert mailboxes.get(mailbox) is None
    assert [m.connection_id for m in mailboxes.members(mailbox)] == ["conn-b", "conn-c"]  # removed only by leaving
    mailboxes.touch(mailbox, NOW)  # a notification for a forgotten mailbox records nothing
    assert mailboxes.get(mailbox) is None
    assert not mailboxes.point_at(mailbox, "late")  # nor is a subscription made after the last user left
