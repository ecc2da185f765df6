"""Graph's per-mailbox limits kept by every instance together (CONTRACT.md section 8: at most 4 concurrent requests
per app and mailbox; after a 429, wait out ``Retry-After``).

Azure Functions runs as many instances as the queues ask for, so a limit kept per process is no limit: two
instances each sending 4 requests to one mailbox draw 429s from their own concurrency. The gate keeps both
limits in Blob storage (``mailbox-gates``), with a local fast path in front:

- **Slots.** A mailbox has 4 slot blobs, ``{mailbox}/slot-{0..3}``. A request is sent while its process holds a
  lease on one of them, so no more than 4 requests are in flight per mailbox across all instances. A process keeps
  the slots it leased for its next requests to the same mailbox (no storage call then) for up to ``hold`` seconds;
  an idle slot is given back after ``linger`` seconds. An instance refused every slot of a mailbox says so
  (``{mailbox}/wanted``, the time it asked); a slot held ``hold`` seconds is then given back and not leased again by
  that process for ``handoff`` seconds (longer than the longest poll), so the instance waiting gets it within about
  a hold and a poll however busy the holder keeps it. Nobody waiting: the holder renews the lease and keeps the slot.
  Leases last ``lease`` seconds and a slot in use is renewed every ``lease / 2``: a long request (an upload's PUT)
  never outlives its lease, and the slots of an instance that was killed come free by themselves. Storage cost: per
  slot and ``hold`` seconds of work, a read of ``wanted`` and a renewal (a lease and a release when handed over),
  and while every slot is taken elsewhere, at most one round of lease attempts and a write of ``wanted`` per
  process and mailbox per poll (backing off to 2 s).
- **Throttle.** After a 429, the instance that got it writes ``{mailbox}/throttled-until`` (Unix seconds; only
  ever later: a write is conditional on the ETag read, so a shorter ``Retry-After`` seen elsewhere never shortens
  it) and every instance reads it at most once a ``throttle_read`` seconds per mailbox it is sending to: no request
  goes to that mailbox until then, from any of them (Graph keeps counting requests made while throttled, section 8).

``ProcessSlots`` keeps the same rules within one process only (tests and tools without storage).
Instances' clocks are assumed to agree within a fraction of a second (Azure's hosts are time-synchronised): the
throttle deadline and ``wanted`` are wall-clock times.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import BlobLeaseClient, ContainerClient

log = logging.getLogger(__name__)

MAX_CONCURRENT_PER_MAILBOX = 4  # CONTRACT.md section 8
LEASE_SECONDS = 30  # Blob leases last 15 to 60 s: a killed instance's slots are free again within this (renewed in use)
HOLD_SECONDS = 10.0  # a leased slot serves this process's requests for this long, then goes back
LINGER_SECONDS = 0.5  # an idle slot goes back after this (the next request of a burst usually comes sooner)
THROTTLE_READ_SECONDS = 1.0  # how stale another instance's 429 may be when this one sends
POLL_SECONDS = (0.1, 2.0)  # while every slot is taken elsewhere: ask again after this, doubling to the maximum
HANDOFF_SECONDS = POLL_SECONDS[1] + 0.5  # a slot handed over is not leased again here for longer than a poll
WANTED_SECONDS = 2 * POLL_SECONDS[1]  # another instance asked this recently: it is still waiting
WRITE_TRIES = 5  # ETag races on the throttle blob between instances
_random = random.SystemRandom()  # spreading instances apart, not secrets; SystemRandom keeps bandit quiet
_shuffle = _random.shuffle


class SlotTimeout(TimeoutError):
    """No slot of the mailbox came free in time: every one is in use (here or by other instances)."""


class Slots(Protocol):
    """Where the slots and the throttle deadline of each mailbox are kept."""

    lease_seconds: float  # a slot not renewed for this long is free again

    def lease(self, mailbox: str, exclude: set[int]) -> Held | None:
        """A slot of ``mailbox`` not in ``exclude``, leased; None when every one is taken."""
        ...

    def release(self, held: Held) -> None: ...

    def read_throttle(self, mailbox: str) -> float:
        """The mailbox's throttle deadline (Unix seconds; 0 when none is known)."""
        ...

    def write_throttle(self, mailbox: str, until: float) -> None:
        """Make the deadline at least ``until`` (never shorten it)."""
        ...

    def renew(self, held: Held) -> bool:
        """Extend a held slot's lease; False when it is no longer this process's."""
        ...

    def read_wanted(self, mailbox: str) -> float:
        """When (Unix seconds) an instance last found every slot of ``mailbox`` taken; 0 when never."""
        ...

    def write_wanted(self, mailbox: str, at: float) -> None: ...


@dataclass(eq=False)
class Held:
    """A slot this process holds."""

    mailbox: str
    index: int
    since: float  # monotonic, when it was leased
    lease: BlobLeaseClient | None = None
    busy: bool = False
    idle_since: float = 0.0
    renewed: float = -math.inf  # monotonic, when its lease was last taken or renewed (``since`` when -inf)


@dataclass(eq=False)
class _Mailbox:
    cond: threading.Condition = field(default_factory=threading.Condition)
    held: list[Held] = field(default_factory=list)
    leasing: bool = False  # one round of lease attempts at a time per process and mailbox
    next_try: float = 0.0  # monotonic: when to ask storage for a slot again
    backoff: float = POLL_SECONDS[0]
    throttled_until: float = 0.0  # Unix seconds
    throttle_read_at: float = -math.inf  # monotonic
    handed_over: dict[int, float] = field(default_factory=dict)  # slot -> monotonic time it may be leased again


class MailboxGate:
    """Admits a request to a mailbox when a slot is held for it, and remembers the mailbox's throttle."""

    def __init__(
        self,
        slots: Slots,
        *,
        limit: int = MAX_CONCURRENT_PER_MAILBOX,
        hold: float = HOLD_SECONDS,
        linger: float = LINGER_SECONDS,
        throttle_read: float = THROTTLE_READ_SECONDS,
        handoff: float = HANDOFF_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._slots = slots
        self._handoff = handoff
        self._renew_every = slots.lease_seconds / 2
        self._wall = wall
        self._limit = limit
        self._hold = hold
        self._linger = linger
        self._throttle_read = throttle_read
        self._monotonic = monotonic
        self._boxes: dict[str, _Mailbox] = {}
        self._lock = threading.Lock()
        self._janitor: threading.Thread | None = None
        self._counts: Counter[str] = Counter()
        self._counts_lock = threading.Lock()

    def _count(self, what: str) -> None:
        with self._counts_lock:
            self._counts[what] += 1

    @property
    def counts(self) -> Counter[str]:
        """What the gate did, for benchmarks: admitted, leased, lease_refused, released, throttle_read/written..."""
        with self._counts_lock:
            return Counter(self._counts)

    def _box(self, mailbox: str) -> _Mailbox:
        with self._lock:
            return self._boxes.setdefault(mailbox, _Mailbox())

    # -- slots ---------------------------------------------------------------------------------------------------

    def enter(self, mailbox: str, timeout: float) -> Held:
        """Hold a slot of ``mailbox`` for one request (give it back with ``leave``); ``SlotTimeout`` after
        ``timeout`` seconds without one."""
        box = self._box(mailbox)
        deadline = self._monotonic() + timeout
        while True:
            stale: list[Held] = []
            with box.cond:
                while True:
                    now = self._monotonic()
                    free = next((h for h in box.held if not h.busy and now - h.since < self._hold), None)
                    if free is not None:
                        free.busy = True
                        self._count("admitted")
                        return free
                    for h in [h for h in box.held if not h.busy]:  # held too long: another instance's turn
                        box.held.remove(h)
                        stale.append(h)
                    if stale or (len(box.held) < self._limit and not box.leasing and now >= box.next_try):
                        box.leasing = True
                        break
                    if now >= deadline:
                        self._count("timed_out")
                        raise SlotTimeout(f"no slot of mailbox {mailbox} came free within {timeout:.1f} s")
                    wake = deadline if box.leasing or len(box.held) >= self._limit else box.next_try
                    box.cond.wait(max(0.005, min(wake, deadline) - now))
                exclude = {h.index for h in box.held}
                cooling = {i for i, until in box.handed_over.items() if until > now}
            got = self._lease(mailbox, box, stale, exclude, cooling)
            if got is not None:
                return got

    def _lease(
        self, mailbox: str, box: _Mailbox, stale: list[Held], exclude: set[int], cooling: set[int]
    ) -> Held | None:
        """Hand ``stale`` slots over when another instance waits for the mailbox, else keep them (renewed); then
        lease one if none is kept (outside the mailbox's lock: these are storage calls)."""
        got: Held | None = None
        kept: list[Held] = []
        given: list[Held] = []
        try:
            if stale and not self._wanted(mailbox):
                kept = [h for h in stale if self._renew(h)]
            given = [h for h in stale if h not in kept]
            for h in given:
                self._give_back(h)
            if kept:
                got = kept.pop()
            elif len(exclude) < self._limit:
                # Slots handed over are left to the instance waiting for them for a while.
                try:
                    got = self._slots.lease(mailbox, exclude | cooling | {h.index for h in given})
                except Exception as exc:  # storage busy (503) or out of reach: asked again after a poll, within
                    # the request's budget; a failure of the gate is not one of the request's tries
                    log.warning("could not lease a slot of mailbox %s: %s", mailbox, exc)
                    self._count("lease_failed")
                    return None
                self._count("leased" if got else "lease_refused")
                if got is None and len(exclude | cooling | {h.index for h in given}) < self._limit:
                    self._say_wanted(mailbox)
        finally:
            with box.cond:
                box.leasing = False
                until = self._monotonic() + self._handoff
                for h in given:
                    box.handed_over[h.index] = until
                for h in kept:
                    box.held.append(h)
                if got is not None:
                    got.busy = True
                    box.held.append(got)
                    box.backoff, box.next_try = POLL_SECONDS[0], 0.0
                    self._count("admitted")
                elif len(exclude) < self._limit:
                    box.next_try = self._monotonic() + box.backoff * (0.5 + _random.random() / 2)
                    box.backoff = min(box.backoff * 2, POLL_SECONDS[1])
                box.cond.notify_all()
        if got is not None:
            self._ensure_janitor()
        return got

    def _wanted(self, mailbox: str) -> bool:
        """Whether another instance found every slot of ``mailbox`` taken in the last few polls."""
        self._count("wanted_read")
        try:
            return self._wall() - self._slots.read_wanted(mailbox) < WANTED_SECONDS
        except Exception as exc:  # unknown: hand over, as the gate did before it could tell
            log.warning("could not read who waits for mailbox %s: %s", mailbox, exc)
            return True

    def _say_wanted(self, mailbox: str) -> None:
        self._count("wanted_written")
        try:
            self._slots.write_wanted(mailbox, self._wall())
        except Exception as exc:  # the holders hand over only at their next hold; no worse than before
            log.warning("could not say that this instance waits for mailbox %s: %s", mailbox, exc)

    def _renew(self, held: Held) -> bool:
        """Keep ``held``: its lease renewed, its hold started again; False when it is lost (given back then)."""
        self._count("renewed")
        try:
            renewed = self._slots.renew(held)
        except Exception as exc:
            log.warning("could not renew slot %d of mailbox %s: %s", held.index, held.mailbox, exc)
            renewed = False
        if renewed:
            held.since = held.renewed = self._monotonic()
        return renewed

    def leave(self, held: Held) -> None:
        """The request that held ``held`` is over: the slot serves the next one, or goes back soon."""
        box = self._box(held.mailbox)
        with box.cond:
            held.busy = False
            held.idle_since = self._monotonic()
            box.cond.notify_all()

    def _give_back(self, held: Held) -> None:
        self._count("released")
        try:
            self._slots.release(held)
        except Exception as exc:  # the lease expires by itself: nothing is lost but a little time
            log.warning("could not release slot %d of mailbox %s: %s", held.index, held.mailbox, exc)

    def _ensure_janitor(self) -> None:
        with self._lock:
            if self._janitor is None or not self._janitor.is_alive():
                self._janitor = threading.Thread(target=self._sweep, name="mailbox-gate-janitor", daemon=True)
                self._janitor.start()

    def _sweep(self) -> None:
        """Give back slots idle for ``linger`` seconds or held for ``hold``; stops when nothing is held."""
        while True:
            time.sleep(min(self._linger, 0.25))
            idle: list[Held] = []
            long_busy: list[Held] = []
            holding = False
            with self._lock:
                boxes = list(self._boxes.values())
            for box in boxes:
                with box.cond:
                    now = self._monotonic()
                    for h in list(box.held):
                        if not h.busy and now - h.idle_since >= self._linger:
                            box.held.remove(h)
                            idle.append(h)
                        elif now - max(h.since, h.renewed) >= self._renew_every:  # a long request: keep its lease
                            long_busy.append(h)
                    holding = holding or bool(box.held)
                    if idle:
                        box.cond.notify_all()
            for h in idle:
                self._give_back(h)
            for h in long_busy:
                self._count("renewed")
                try:
                    if self._slots.renew(h):
                        h.renewed = self._monotonic()
                except Exception as exc:  # tried again at the next sweep
                    log.warning("could not renew slot %d of mailbox %s: %s", h.index, h.mailbox, exc)
            if not holding:
                with self._lock:
                    if not any(b.held for b in self._boxes.values()):
                        self._janitor = None
                        return

    def release_all(self) -> None:
        """Give back every slot held and not in use (a process shutting down, a test's cleanup)."""
        with self._lock:
            boxes = list(self._boxes.values())
        for box in boxes:
            with box.cond:
                idle = [h for h in box.held if not h.busy]
                for h in idle:
                    box.held.remove(h)
            for h in idle:
                self._give_back(h)

    # -- throttle ------------------------------------------------------------------------------------------------

    def throttle(self, mailbox: str, until: float) -> None:
        """Graph answered 429 for ``mailbox``: nothing is sent to it before ``until`` (Unix seconds), from here or,
        once they read it, from any instance."""
        box = self._box(mailbox)
        with box.cond:
            if until <= box.throttled_until + 0.25:
                return  # known already (four requests in flight get their 429s together)
            box.throttled_until = until
        self._count("throttle_written")
        try:
            self._slots.write_throttle(mailbox, until)
        except Exception as exc:  # this instance still waits; the others find their own 429s
            log.warning("could not share the throttle of mailbox %s: %s", mailbox, exc)

    def throttled_until(self, mailbox: str) -> float:
        """Until when (Unix seconds) ``mailbox`` is throttled, as this process knows it (read from storage at most
        every ``throttle_read`` seconds)."""
        box = self._box(mailbox)
        now = self._monotonic()
        with box.cond:
            read = now - box.throttle_read_at >= self._throttle_read
            if read:
                box.throttle_read_at = now  # one reader at a time; the others use what is known
        if read:
            self._count("throttle_read")
            try:
                shared = self._slots.read_throttle(mailbox)
            except Exception as exc:
                log.warning("could not read the throttle of mailbox %s: %s", mailbox, exc)
                shared = 0.0
            with box.cond:
                box.throttled_until = max(box.throttled_until, shared)
        return box.throttled_until


class ProcessSlots:
    """Slots and throttles of this process only: leases never expire, nothing is stored."""

    def __init__(self, limit: int = MAX_CONCURRENT_PER_MAILBOX, monotonic: Callable[[], float] = time.monotonic):
        self._limit = limit
        self._monotonic = monotonic
        self.lease_seconds = math.inf  # never expire
        self._lock = threading.Lock()
        self._taken: dict[str, set[int]] = {}
        self._throttles: dict[str, float] = {}
        self._wanted: dict[str, float] = {}

    def lease(self, mailbox: str, exclude: set[int]) -> Held | None:
        with self._lock:
            taken = self._taken.setdefault(mailbox, set())
            index = next((i for i in range(self._limit) if i not in taken and i not in exclude), None)
            if index is None:
                return None
            taken.add(index)
            return Held(mailbox, index, self._monotonic())

    def release(self, held: Held) -> None:
        with self._lock:
            self._taken.get(held.mailbox, set()).discard(held.index)

    def read_throttle(self, mailbox: str) -> float:
        with self._lock:
            return self._throttles.get(mailbox, 0.0)

    def write_throttle(self, mailbox: str, until: float) -> None:
        with self._lock:
            self._throttles[mailbox] = max(until, self._throttles.get(mailbox, 0.0))

    def renew(self, held: Held) -> bool:
        with self._lock:
            return held.index in self._taken.get(held.mailbox, set())

    def read_wanted(self, mailbox: str) -> float:
        with self._lock:
            return self._wanted.get(mailbox, 0.0)

    def write_wanted(self, mailbox: str, at: float) -> None:
        with self._lock:
            self._wanted[mailbox] = max(at, self._wanted.get(mailbox, 0.0))


class BlobSlots:
    """Slots as leased blobs, the throttle deadline as a blob's text, in one container."""

    def __init__(
        self,
        container: ContainerClient,
        limit: int = MAX_CONCURRENT_PER_MAILBOX,
        lease_seconds: int = LEASE_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._container = container
        self._limit = limit
        self.lease_seconds = float(lease_seconds)
        self._monotonic = monotonic

    def lease(self, mailbox: str, exclude: set[int]) -> Held | None:
        order = [i for i in range(self._limit) if i not in exclude]
        _shuffle(order)  # instances asking at once try different slots first
        for index in order:
            blob = self._container.get_blob_client(f"{mailbox}/slot-{index}")
            for _ in range(2):
                try:
                    lease = blob.acquire_lease(lease_duration=int(self.lease_seconds))
                except ResourceNotFoundError:  # the mailbox's first request ever: make its slots
                    with contextlib.suppress(ResourceExistsError):
                        blob.upload_blob(b"", overwrite=False)
                    continue
                except HttpResponseError as exc:
                    if exc.status_code == 409:  # LeaseAlreadyPresent: another request holds it
                        break
                    raise
                return Held(mailbox, index, self._monotonic(), lease)
        return None

    def release(self, held: Held) -> None:
        if held.lease is not None:
            with contextlib.suppress(HttpResponseError):  # expired and taken by another: it is theirs now
                held.lease.release()

    def renew(self, held: Held) -> bool:
        if held.lease is None:
            return False
        try:
            held.lease.renew()
        except HttpResponseError as exc:
            if exc.status_code == 409:  # LeaseIdMismatch...: it lapsed and another instance took it
                return False
            raise
        return True

    def read_throttle(self, mailbox: str) -> float:
        return self._read_time(f"{mailbox}/throttled-until")[0]

    def write_throttle(self, mailbox: str, until: float) -> None:
        """Only ever later: read, and write on the ETag read (or only if absent), so a shorter wait written by
        another instance at the same moment never replaces a longer one."""
        name = f"{mailbox}/throttled-until"
        for _ in range(WRITE_TRIES):
            known, etag = self._read_time(name)
            if known >= until:
                return
            text = f"{until:.3f}".encode()
            try:
                if etag is None:
                    self._container.upload_blob(name, text, overwrite=False)
                else:
                    self._container.upload_blob(
                        name, text, overwrite=True, etag=etag, match_condition=MatchConditions.IfNotModified
                    )
                return
            except (ResourceExistsError, ResourceModifiedError):
                continue  # another instance wrote it meanwhile: compare with theirs
        raise ResourceModifiedError(f"{name}: written by others {WRITE_TRIES} times in a row")

    def read_wanted(self, mailbox: str) -> float:
        return self._read_time(f"{mailbox}/wanted")[0]

    def write_wanted(self, mailbox: str, at: float) -> None:
        self._container.upload_blob(f"{mailbox}/wanted", f"{at:.3f}".encode(), overwrite=True)

    def _read_time(self, name: str) -> tuple[float, str | None]:
        """A Unix time kept as a blob's text (0 when absent or unreadable), and the blob's ETag."""
        try:
            download = self._container.download_blob(name)
            text = download.readall()
        except ResourceNotFoundError:
            return 0.0, None
        try:
            return float(text), download.properties.etag
        except ValueError:
            return 0.0, download.properties.etag
