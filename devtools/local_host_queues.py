"""Queue triggers: poll a Storage queue and run the function per message, with the host's queue semantics.

As the Functions host does (host.json reference, "queues"; WebJobs ``QueueProcessor``):
- receive up to ``batchSize`` messages; fetch the next batch once the messages still running drop to
  ``newBatchThreshold`` (so at most ``batchSize + newBatchThreshold`` run at once);
- when the queue is empty, wait 100 ms and double the wait up to ``maxPollingInterval``; a message resets it;
- success deletes the message; failure makes it visible again after ``visibilityTimeout``, and a message that
  failed on its ``maxDequeueCount``-th dequeue is copied to ``<queue>-poison`` and deleted;
- ``messageEncoding`` base64 means the message text is base64 of the body bytes.
Unlike the host, a running message's lease (10 minutes, as the host's) is not renewed.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import AzureError, ResourceExistsError
from azure.functions.queue import QueueMessage as FuncQueueMessage
from azure.storage.queue import QueueClient, QueueMessage

from devtools.local_host_config import QueueOptions
from devtools.local_host_invoke import invoke
from sync_core.names import POISON_SUFFIX

log = logging.getLogger("devtools.local_host")

MIN_POLLING_INTERVAL = 0.1
LEASE_SECONDS = 600


def next_polling_interval(current: float, found_messages: bool, maximum: float) -> float:
    """The wait before the next poll: reset when messages came, doubled (capped) while the queue is empty."""
    return MIN_POLLING_INTERVAL if found_messages else min(current * 2, maximum)


def decode_body(text: str, encoding: str) -> bytes:
    """The body bytes of a message's text under host.json's ``messageEncoding``."""
    if encoding == "none":
        return text.encode("utf-8")
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error as error:
        raise ValueError(f"message text is not base64 (host.json messageEncoding is 'base64'): {error}") from error


@dataclass(frozen=True)
class QueueFunction:
    function_name: str
    arg_name: str
    queue_name: str
    connection_string: str
    user_function: Any


class QueueListener:
    """One queue-trigger function's poller, on its own thread, with a pool for its invocations."""

    def __init__(self, function: QueueFunction, options: QueueOptions) -> None:
        self.function = function
        self._options = options
        # Raw text both ways: decoding is ours (messageEncoding), and poison copies keep the text as it was.
        self._queue = QueueClient.from_connection_string(function.connection_string, function.queue_name)
        self._poison = QueueClient.from_connection_string(
            function.connection_string, function.queue_name + POISON_SUFFIX
        )
        self._stop = threading.Event()
        self._running = threading.Condition()
        self._in_flight = 0
        self._thread = threading.Thread(target=self._poll, name=f"queue-{function.function_name}", daemon=True)

    def start(self) -> None:
        _create_if_missing(self._queue)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop polling and wait for running invocations to finish."""
        self._stop.set()
        with self._running:
            self._running.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _poll(self) -> None:
        options = self._options
        wait = MIN_POLLING_INTERVAL
        workers = options.batch_size + options.new_batch_threshold
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"queue-{self.function.function_name}") as pool:
            while not self._stop.is_set():
                with self._running:
                    self._running.wait_for(
                        lambda: self._in_flight <= options.new_batch_threshold or self._stop.is_set()
                    )
                if self._stop.is_set():
                    break
                messages = self._receive()
                wait = next_polling_interval(wait, bool(messages), options.max_polling_interval)
                if not messages:
                    self._stop.wait(wait)
                    continue
                with self._running:
                    self._in_flight += len(messages)
                for message in messages:
                    pool.submit(self._process, message)

    def _receive(self) -> list[QueueMessage]:
        try:
            return list(
                self._queue.receive_messages(
                    messages_per_page=self._options.batch_size,
                    max_messages=self._options.batch_size,
                    visibility_timeout=LEASE_SECONDS,
                    retry_total=0,  # the polling loop is the retry
                )
            )
        except AzureError as error:
            log.warning("Queue '%s': receive failed, will poll again: %s", self.function.queue_name, error)
            return []

    def _process(self, message: QueueMessage) -> None:
        try:
            self._settle(message)
        except Exception:  # a storage error while settling: the lease expires and the message comes back
            log.exception("Queue '%s': could not settle message %s", self.function.queue_name, message.id)
        finally:
            with self._running:
                self._in_flight -= 1
                self._running.notify_all()

    def _settle(self, message: QueueMessage) -> None:
        count = message.dequeue_count or 0
        if count > self._options.max_dequeue_count:
            # Dequeued more often than allowed without a recorded failure (e.g. its lease ran out): the host
            # poisons it without running it again.
            self._to_poison(message)
            return
        try:
            invoke(
                self.function.function_name,
                f"New queue message detected on '{self.function.queue_name}'.",
                self.function.user_function,
                lambda: {self.function.arg_name: self._bind(message)},
            )
        except Exception:  # logged by invoke
            if count >= self._options.max_dequeue_count:
                self._to_poison(message)
            else:  # the service counts visibility in whole seconds
                self._queue.update_message(message, visibility_timeout=round(self._options.visibility_timeout))
            return
        self._queue.delete_message(message)

    def _bind(self, message: QueueMessage) -> FuncQueueMessage:
        # azure.functions.queue.QueueMessage.__init__ has no annotations (azure-functions 1.x).
        return FuncQueueMessage(  # type: ignore[no-untyped-call]
            id=message.id,
            body=decode_body(str(message.content), self._options.message_encoding),
            dequeue_count=message.dequeue_count,
            insertion_time=message.inserted_on,
            expiration_time=message.expires_on,
            time_next_visible=message.next_visible_on,
            pop_receipt=message.pop_receipt,
        )

    def _to_poison(self, message: QueueMessage) -> None:
        log.warning(
            "Message has reached MaxDequeueCount of %d. Moving message to queue '%s'.",
            self._options.max_dequeue_count,
            self._poison.queue_name,
        )
        _create_if_missing(self._poison)
        self._poison.send_message(message.content)
        self._queue.delete_message(message)


def _create_if_missing(queue: QueueClient) -> None:
    with contextlib.suppress(ResourceExistsError):
        queue.create_queue()
