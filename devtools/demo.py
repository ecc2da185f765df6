"""``make demo``: the whole Outlook 2-way sync story on the offline stack, printed as Enrollio would see it.

Connect a mailbox; send from Enrollio; the contact replies with a 1 MB attachment; the user replies from Outlook;
the contact replies with a 4 MB attachment (skipped, with its reason); a thread started in Outlook (ignored); the
user switches address and the old thread keeps syncing; disconnect stops it. Enrollio's events endpoint (a local
receiver verifying each delivery with the reference Standard Webhooks library) prints the events it received.

Its Azurite keeps its data on disk in ``.run/demo/azurite/`` (wiped at the start of each demo), so
``make status`` shows the operator's view of this run afterwards.
"""

from __future__ import annotations

import base64
import logging
import shutil
import time
import uuid
from html.parser import HTMLParser
from typing import Any

from devtools.azurite import Azurite
from devtools.enrollio_receiver import EnrollioReceiver, describe, new_secret
from devtools.run import RUN_DIR
from devtools.stack import Stack, offline_stack, wait_for
from sync_core import names

MIB = 1024 * 1024
CONTACT = "pat.parent@home.example"
USER = "teacher-42"
DEMO_DIR = RUN_DIR / "demo"
STARTED = time.monotonic()


def say(text: str) -> None:
    print(f"[{time.monotonic() - STARTED:5.1f}s] {text}", flush=True)


def thread_view(stack: Stack, thread_id: str) -> dict[str, Any]:
    response = stack.enrollio.call("GET", f"/api/threads/{thread_id}/messages", params={"user_id": USER})
    response.raise_for_status()
    return dict(response.json())


def message_count(stack: Stack, thread_id: str) -> int:
    return len(thread_view(stack, thread_id)["messages"])


def send_from_enrollio(stack: Stack, subject: str, html: str, thread_id: str | None = None) -> dict[str, Any]:
    body = {
        "user_id": USER,
        "account_id": "studio-7",
        "kind": "individual",
        "contact": {"id": "contact-9", "email": CONTACT, "name": "Pat Parent"},
        "subject": subject,
        "html": html,
        **({"thread_id": thread_id} if thread_id else {}),
    }
    response = stack.enrollio.call("POST", "/api/send", body=body, headers={"Idempotency-Key": uuid.uuid4().hex})
    response.raise_for_status()
    return dict(response.json())


def story(stack: Stack) -> None:
    school, studio = "alex@school.example", "alex@studio.example"
    stack.world.add_mailbox(school, "Alex Teacher")
    stack.world.add_mailbox(studio, "Alex Teacher")

    say(f"1. {USER} connects the Outlook mailbox {school} (Microsoft sign-in with PKCE, consent)")
    old_cid = stack.connect(USER, school)["connection_id"]
    say(f"   connected; a Graph subscription watches {school}")

    say(f"2. Enrollio sends the first email to {CONTACT}: it goes out from Outlook")
    sent = send_from_enrollio(stack, "Trial class on Monday", "<p>Hi Pat, see you Monday at 5pm!</p>")
    thread_id = sent["thread_id"]
    say(f"   route={sent['route']} from={sent['from']} thread={thread_id[:8]}…")

    say("3. The contact replies with a 1 MB attachment")
    form = bytes(range(256)) * (MIB // 256)
    stack.mail_world("POST", f"mail/{school}/deliver", {
        "from": CONTACT, "subject": "RE: Trial class on Monday", "in_reply_to": sent["internet_message_id"],
        "body_text": "Great! The signed form is attached.",
        "attachments": [{"kind": "file", "name": "signed-form.pdf", "content_type": "application/pdf",
                         "content_base64": base64.b64encode(form).decode()}],
    })  # fmt: skip
    wait_for(lambda: message_count(stack, thread_id) >= 2, "the reply to sync")
    say("   synced, attachment bytes stored in Blob storage")

    say("4. The user replies from Outlook itself")
    inbox = stack.mail_world("GET", f"mail/{school}/messages?folder=inbox")["value"]
    stack.mail_world(
        "POST", f"mail/{school}/reply", {"message_id": inbox[-1]["id"], "body_text": "Thanks Pat, got it."}
    )
    wait_for(lambda: message_count(stack, thread_id) >= 3, "the Outlook reply to sync")
    say("   synced as outbound")

    say("5. The contact replies with a 4 MB attachment (over the 3 MB cap)")
    stack.mail_world("POST", f"mail/{school}/deliver", {
        "from": CONTACT, "subject": "RE: Trial class on Monday", "in_reply_to": sent["internet_message_id"],
        "body_text": "And here is the video.",
        "attachments": [{"kind": "file", "name": "recital.mp4", "size": 4 * MIB}],
    })  # fmt: skip
    skips = wait_for(lambda: stack.enrollio.call("GET", f"/api/users/{USER}/skips").json()["skips"], "the skip record")
    say(f"   not synced: {skips[0]['reason']} ({too_large_text(skips[0]['details'][0])})")

    say("6. The user starts a new thread in Outlook (it must not sync)")
    private = {"to": [CONTACT], "subject": "Private: staff party", "body_text": "hi"}
    stack.mail_world("POST", f"mail/{school}/send", private)
    stack.settle()
    say("   ignored: nothing of it is stored")

    say(f"7. Update Email: {USER} connects {studio}; the old mailbox stays connected")
    stack.connect(USER, studio)
    new_mail = send_from_enrollio(stack, "Welcome to the studio", "<p>New address, same studio.</p>")
    say(f"   new emails go from {new_mail['from']}")
    stack.mail_world("POST", f"mail/{school}/deliver", {
        "from": CONTACT, "subject": "RE: Trial class on Monday", "in_reply_to": sent["internet_message_id"],
        "body_text": "One more question about Monday.",
    })  # fmt: skip
    wait_for(lambda: message_count(stack, thread_id) >= 4, "the old thread's reply to sync")
    say("   the old thread keeps syncing through the old mailbox")

    say(f"8. Disconnect {school}: later messages stop syncing")
    stack.enrollio.call(
        "POST", "/api/outlook/disconnect", body={"user_id": USER, "connection_id": old_cid}
    ).raise_for_status()
    stack.mail_world("POST", f"mail/{school}/deliver", {
        "from": CONTACT, "subject": "RE: Trial class on Monday", "in_reply_to": sent["internet_message_id"],
        "body_text": "Are you there?",
    })  # fmt: skip
    stack.settle()
    say(f"   still {message_count(stack, thread_id)} messages in the thread")

    print_thread(stack, thread_id)


def print_events(stack: Stack, receiver: EnrollioReceiver) -> None:
    """What Enrollio's events endpoint received once the outbox is empty: each verified, in arrival order."""
    outbox = stack.services.storage.tables.get_table_client(names.TABLE_OUTBOX)
    wait_for(lambda: not list(outbox.list_entities()), "every event to reach Enrollio")
    received = receiver.received
    print(f"\n=== Events Enrollio received ({len(received)}, each verified with its whsec_ secret, ids only) ===")
    for event in received:
        print(f"   {event.webhook_id[:12]}… {describe(event)}")


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._skip += tag in ("head", "style", "script")

    def handle_endtag(self, tag: str) -> None:
        self._skip -= tag in ("head", "style", "script")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def text_of(body: dict[str, str]) -> str:
    """A body's readable text, one line."""
    if body["content_type"] != "html":
        return " ".join(body["content"].split())
    parser = _Text()
    parser.feed(body["content"])
    return " ".join(" ".join(parser.parts).split())


def print_thread(stack: Stack, thread_id: str) -> None:
    view = thread_view(stack, thread_id)
    print(f"\n=== Thread as Enrollio sees it: {view['subject']!r} with {view['contact']['email']} ===")
    for m in view["messages"]:
        arrow = "->" if m["direction"] == "outbound" else "<-"
        origin = "sent from Enrollio" if m["origin"] == "enrollio" else "synced from Outlook"
        print(f"{arrow} {m['sent_at'][:19]}  {m['from']:<34} {m['subject']!r} ({origin})")
        print(f"     {text_of(m['body'])[:90]}")
        for a in m["attachments"]:
            print(f"     attachment: {a['name']} ({a['size']} bytes)")
    skips = stack.enrollio.call("GET", f"/api/users/{USER}/skips").json()["skips"]
    print("\n=== Not synced, with reasons ===")
    for s in skips:
        details = ", ".join(f"{too_large_text(d)} (cap {d['cap']})" for d in s["details"])
        print(f"!! {s['subject']!r}: {s['reason']}: {details}")


def too_large_text(detail: dict[str, Any]) -> str:
    """An attachment over the cap as a user reads it: its counted bytes, else the size Graph reports for it."""
    if "measured_size" in detail:
        return f"{detail['name']} is {detail['measured_size']} bytes"
    if "measured_at_least" in detail:
        return f"{detail['name']} is more than {detail['measured_at_least']} bytes"
    return f"{detail['name']}: Graph reports {detail['graph_size']} bytes"


def print_summary(stack: Stack) -> None:
    connections = stack.enrollio.call("GET", f"/api/users/{USER}/connections").json()["connections"]
    print("\n=== Connections ===")
    for c in connections:
        print(f"   {c['address']:<36} {c['status']}")
    print("\nDemo complete: Enrollio-started threads sync both ways; Outlook-started threads, oversized")
    print("attachments and disconnected mailboxes do not, and every skip says why.")


def main() -> None:
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    say("starting Azurite, the Graph + identity emulator and the local Functions host…")
    shutil.rmtree(DEMO_DIR, ignore_errors=True)
    (DEMO_DIR / "azurite").mkdir(parents=True)
    azurite = Azurite(location=DEMO_DIR / "azurite", log_path=DEMO_DIR / "azurite.log")
    secret = new_secret()
    with (
        azurite,
        EnrollioReceiver(secret) as receiver,
        offline_stack(azurite, ENROLLIO_EVENTS_URL=receiver.url, ENROLLIO_EVENTS_SECRET=secret) as stack,
    ):
        say(f"   Graph emulator at {stack.emulator.base_url}, functions at {stack.enrollio.base_url}")
        say(f"   Enrollio's events endpoint at {receiver.url}")
        story(stack)
        print_events(stack, receiver)
        print_summary(stack)
    say("stopped everything; `make status` shows the operator's view of this run (data in .run/demo/)")


if __name__ == "__main__":
    main()
