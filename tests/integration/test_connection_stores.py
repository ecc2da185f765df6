"""Connections, subscriptions, OAuth flows and token caches as they are stored in Azurite."""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from concurrent.futures import ThreadPoolExecutor

from sync_core import names
from sync_core.adapters.connection_store import ConnectionStore, SubscriptionStore
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
    soon = Subscription(
        str(uuid.uuid4()), "u", "conn-a", "t", "state", "/users/x/messages", NOW + dt.timedelta(hours=2)
    )
    later = Subscription(
        str(uuid.uuid4()), "u", "conn-a", "t", "state", "/users/x/messages", NOW + dt.timedelta(days=5)
    )
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
