"""Outbound HTTP to a subscriber's endpoints: the validation handshake and notification delivery.

CONTRACT.md 2.1: the handshake is ``POST {url}?validationToken=<url-encoded token>`` with ``text/plain``; the
endpoint must answer 200 ``text/plain`` with the *decoded* token within 10 s. CONTRACT.md 2.2 and 3.1: a 2xx
means delivered, anything else (or no answer in time) is retried with exponential back-off for up to 4 hours,
and notifications queued for the same URL travel together in one ``{"value": [...]}`` POST. The emulator
scales the back-off and the 4-hour horizon down (``RetryPolicy``) so tests see retries and give-ups quickly.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import requests

# The shape of the tokens Graph really sends: spaces and colons, so an endpoint that forgets to URL-decode fails.
VALIDATION_TOKEN_TEXT = "Validation: Testing client application reachability for subscription Request-Id: {}"
HANDSHAKE_TIMEOUT_SECONDS = 10.0  # CONTRACT.md 2.1 (2025 docs)
DELIVERY_TIMEOUT_SECONDS = 10.0  # CONTRACT.md 2.2: an answer after 10 s counts as no answer


# Graph calls only endpoints with a publicly trusted certificate; a local subscriber served over HTTPS has a
# generated one, which the stack hands over here (devtools.stack, https=True). None: the default trust store.
_subscriber_ca: str | None = None


def trust_subscriber_ca(ca_path: str | None) -> None:
    """Trust this CA file (besides nothing else) for the subscriber's HTTPS endpoints; None restores the default."""
    global _subscriber_ca
    _subscriber_ca = ca_path


def _session() -> requests.Session:
    # The subscriber is a local endpoint: ignore proxy and CA-bundle variables of the environment.
    session = requests.Session()
    session.trust_env = False
    if _subscriber_ca:
        session.verify = _subscriber_ca
    return session


def validate_endpoint(url: str, timeout: float = HANDSHAKE_TIMEOUT_SECONDS) -> str | None:
    """Run the validation handshake against ``url``; None if it passed, else the reason it failed."""
    token = VALIDATION_TOKEN_TEXT.format(uuid.uuid4())
    separator = "&" if "?" in url else "?"
    try:
        with _session() as session:
            response = session.post(
                f"{url}{separator}validationToken={quote(token, safe='')}",
                headers={"Content-Type": "text/plain; charset=utf-8"},
                timeout=timeout,
            )
    except requests.Timeout:
        return f"Subscription validation request timed out (no answer from {url} within {timeout:g} s)."
    except requests.RequestException as err:
        return f"Subscription validation request failed: {url} is unreachable ({type(err).__name__})."
    if response.status_code != 200:
        return (
            f"Subscription validation request failed. Notification endpoint must respond with 200 OK to "
            f"validation request ({url} answered {response.status_code})."
        )
    if not response.headers.get("Content-Type", "").startswith("text/plain"):
        return f"Subscription validation request failed. Response must be text/plain ({url})."
    if response.text != token:
        return (
            f"Subscription validation request failed. Response must exactly match the URL-decoded "
            f"validationToken query parameter ({url})."
        )
    return None


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential back-off for failed deliveries: ``base * 2**(attempt-1)`` capped, given up after ``horizon``."""

    base_delay: float = 0.1
    max_delay: float = 2.0
    horizon: float = 30.0  # Graph: 4 hours; scaled down

    def delay(self, attempts: int) -> float:
        return float(min(self.base_delay * 2 ** (attempts - 1), self.max_delay))


@dataclass(frozen=True)
class DeliveryFaults:
    """Rates (0..1) at which notifications are dropped, sent twice, or jump ahead in their URL's queue."""

    drop_rate: float = 0.0
    duplicate_rate: float = 0.0
    reorder_rate: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("drop_rate", "duplicate_rate", "reorder_rate"):
            rate = getattr(self, name)
            if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name}: must be a number between 0 and 1, got {rate!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed: must be an integer, got {self.seed!r}")


@dataclass
class _Pending:
    item: dict[str, Any]
    first_at: float
    due_at: float
    attempts: int = 0


@dataclass(frozen=True)
class Undeliverable:
    """A notification given up on after the retry horizon."""

    url: str
    item: dict[str, Any]
    attempts: int
    last_error: str


@dataclass
class _Queues:
    pending: dict[str, list[_Pending]] = field(default_factory=dict)
    in_flight: set[str] = field(default_factory=set)


class Notifier:
    """A background sender: per URL, one POST in flight, carrying every notification that is due."""

    def __init__(self, retry: RetryPolicy | None = None, timeout: float = DELIVERY_TIMEOUT_SECONDS) -> None:
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        self.undeliverable: list[Undeliverable] = []
        self.dropped: list[tuple[str, dict[str, Any]]] = []  # lost to the drop fault, for tests to see
        self._faults = DeliveryFaults()
        self._rng = random.Random(0)
        self._queues = _Queues()
        self._cond = threading.Condition()
        self._closed = False
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="graph-emulator-notify")
        self._thread = threading.Thread(target=self._run, name="graph-emulator-notifier", daemon=True)
        self._thread.start()

    def set_faults(self, faults: DeliveryFaults) -> None:
        """Switch delivery faults (and re-seed their random generator)."""
        with self._cond:
            self._faults = faults
            self._rng = random.Random(faults.seed)

    def enqueue(self, url: str, item: dict[str, Any]) -> None:
        """Queue one notification for ``url``; never blocks on the network."""
        now = time.monotonic()
        with self._cond:
            if self._rng.random() < self._faults.drop_rate:
                self.dropped.append((url, item))
                return
            copies = 2 if self._rng.random() < self._faults.duplicate_rate else 1
            queue = self._queues.pending.setdefault(url, [])
            for _ in range(copies):
                position = len(queue)
                if queue and self._rng.random() < self._faults.reorder_rate:
                    position = self._rng.randrange(len(queue))
                queue.insert(position, _Pending(item, first_at=now, due_at=now))
            self._cond.notify_all()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until nothing is queued, waiting to be retried or in flight; False if ``timeout`` ran out first."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._queues.pending and not self._queues.in_flight, timeout)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=5)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                next_due: float | None = None
                for url, queue in list(self._queues.pending.items()):
                    if url in self._queues.in_flight:
                        continue
                    due = [p for p in queue if p.due_at <= now]
                    if due:
                        self._queues.pending[url] = [p for p in queue if p.due_at > now]
                        self._queues.in_flight.add(url)
                        self._pool.submit(self._deliver, url, due)
                    else:
                        soonest = min(p.due_at for p in queue)
                        next_due = soonest if next_due is None else min(next_due, soonest)
                self._cond.wait(None if next_due is None else max(next_due - now, 0.0))

    def _deliver(self, url: str, batch: list[_Pending]) -> None:
        error = self._post(url, [p.item for p in batch])
        now = time.monotonic()
        with self._cond:
            self._queues.in_flight.discard(url)
            if error is not None:
                retry = []
                for pending in batch:
                    pending.attempts += 1
                    pending.due_at = now + self.retry.delay(pending.attempts)
                    if pending.due_at - pending.first_at > self.retry.horizon:
                        self.undeliverable.append(Undeliverable(url, pending.item, pending.attempts, error))
                    else:
                        retry.append(pending)
                # Older notifications stay ahead of ones queued while this POST was in flight.
                self._queues.pending[url] = retry + self._queues.pending.get(url, [])
            if not self._queues.pending.get(url):
                self._queues.pending.pop(url, None)
            self._cond.notify_all()

    def _post(self, url: str, items: list[dict[str, Any]]) -> str | None:
        """POST one changeNotificationCollection; None if delivered (2xx), else why not."""
        try:
            with _session() as session:
                response = session.post(
                    url,
                    data=json.dumps({"value": items}),
                    headers={"Content-Type": "application/json; charset=utf-8"},
                    timeout=self.timeout,
                )
        except Exception as err:  # any failure to get an answer is a failed delivery, to be retried
            return f"{type(err).__name__}: {err}"
        return None if 200 <= response.status_code < 300 else f"HTTP {response.status_code}"
