"""The events' Standard Webhooks signatures: the specification's own example, and the reference library's verdict."""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from sync_core.event_signing import BadSecret, headers, secret_bytes, signature

# The Standard Webhooks specification's example (spec/standard-webhooks.md, "Signature scheme"), reproduced by every
# implementation's tests.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_the_specifications_example_signs_to_its_published_signature() -> None:
    assert signature(secret_bytes(SPEC_SECRET), SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE


def test_the_reference_library_verifies_what_is_signed_here_and_refuses_a_changed_byte() -> None:
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    body = json.dumps({"type": "message.synced", "data": {"thread_id": "t-1"}}).encode()
    now = int(dt.datetime.now(dt.UTC).timestamp())
    signed = headers([secret_bytes(secret)], "evt_0123", now, body)

    assert Webhook(secret).verify(body, signed) == json.loads(body)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.replace(b"t-1", b"t-2"), signed)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, {**signed, "webhook-id": "evt_0124"})


def test_the_reference_librarys_signature_is_the_same_string() -> None:
    moment = dt.datetime.fromtimestamp(SPEC_TIMESTAMP, tz=dt.UTC)
    assert Webhook(SPEC_SECRET).sign(SPEC_ID, moment, SPEC_BODY.decode()) == SPEC_SIGNATURE


@pytest.mark.parametrize(
    ("secret", "problem"),
    [
        ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "must start with 'whsec_'"),
        ("whsec_not base64!", "followed by base64"),
        ("whsec_" + base64.b64encode(b"short").decode(), "24 to 64 bytes (it holds 5)"),
        ("whsec_" + base64.b64encode(b"x" * 65).decode(), "24 to 64 bytes (it holds 65)"),
    ],
)
def test_a_malformed_secret_is_refused_naming_the_problem_not_the_value(secret: str, problem: str) -> None:
    with pytest.raises(BadSecret) as refused:
        secret_bytes(secret)
    assert problem in str(refused.value)
    assert secret[6:] not in str(refused.value)


# -- The settings that turn events on ---------------------------------------------------------------------------


def test_events_are_off_when_the_url_is_unset_or_empty_as_bicep_writes_it() -> None:
    from tests.conftest import make_settings

    assert not make_settings("UseDevelopmentStorage=true").events_enabled
    # infra/: ENROLLIO_EVENTS_URL '' and the Key Vault secret 'unset' when no events URL was given.
    blank = make_settings("UseDevelopmentStorage=true", ENROLLIO_EVENTS_URL="", ENROLLIO_EVENTS_SECRET="unset")
    assert not blank.events_enabled and blank.enrollio_events_url is None


@pytest.mark.parametrize(
    ("url", "secret", "named"),
    [
        ("http://enrollio.example/hooks", "whsec_" + "A" * 44, "ENROLLIO_EVENTS_URL"),  # plain http off the machine
        ("https://enrollio.example/hooks", None, "ENROLLIO_EVENTS_SECRET is required"),
        ("https://enrollio.example/hooks", "unset", "ENROLLIO_EVENTS_SECRET must start with 'whsec_'"),
        ("https://enrollio.example/hooks", "whsec_" + "QUJD", "ENROLLIO_EVENTS_SECRET must hold 24 to 64 bytes"),
        ("https://enrollio.example/hooks", " ".join(["whsec_" + "A" * 44] * 3), "must hold 1 or 2 secrets"),
    ],
)
def test_a_wrong_events_setting_turns_events_off_naming_the_setting_not_the_secret_and_the_app_still_loads(
    url: str, secret: str | None, named: str
) -> None:
    from tests.conftest import make_settings

    overrides = {"ENROLLIO_EVENTS_URL": url, **({"ENROLLIO_EVENTS_SECRET": secret} if secret else {})}
    settings = make_settings("UseDevelopmentStorage=true", **overrides)  # mail sync's settings load all the same
    assert not settings.events_enabled
    assert settings.events_problem is not None and named in settings.events_problem
    assert secret is None or secret.removeprefix("whsec_") not in settings.events_problem


def test_while_the_secret_is_rotated_each_delivery_carries_two_signatures_and_either_secret_verifies() -> None:
    from tests.conftest import make_settings

    new, old = ("whsec_" + base64.b64encode(secrets.token_bytes(32)).decode() for _ in range(2))
    settings = make_settings(
        "UseDevelopmentStorage=true", ENROLLIO_EVENTS_URL="https://enrollio.example/hooks",
        ENROLLIO_EVENTS_SECRET=f"{new} {old}",
    )  # fmt: skip
    assert settings.events_enabled
    body = b'{"type": "message.synced"}'
    signed = headers(settings.events_keys, "evt_0123", int(dt.datetime.now(dt.UTC).timestamp()), body)
    assert len(signed["webhook-signature"].split()) == 2
    assert Webhook(new).verify(body, signed) == Webhook(old).verify(body, signed) == json.loads(body)
    stranger = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    with pytest.raises(WebhookVerificationError):
        Webhook(stranger).verify(body, signed)
