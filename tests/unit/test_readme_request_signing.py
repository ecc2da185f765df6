"""The README's recipe for signing a request is the one the service checks (an integrator follows it), for every
spelling of a target the service may see."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest

from sync_core.signing import canonical_target, verify_request

README = Path(__file__).resolve().parents[2] / "README.md"
SECRET = b"the secret agreed with Enrollio"


def readme_recipe() -> dict[str, object]:
    section = README.read_text().split("### Signed requests", 1)[1].split("\n### ", 1)[0]
    [code] = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    scope: dict[str, object] = {"SHARED_SECRET": SECRET}
    exec(code, scope)  # noqa: S102 (the README's own snippet, as written: repository text, not input)
    return scope


def test_the_documented_request_recipe_signs_as_the_service_verifies() -> None:
    scope = readme_recipe()
    headers = scope["headers"]
    body = scope["body"]
    assert isinstance(headers, dict) and isinstance(body, bytes)
    verify_request(SECRET, headers, "POST", "/api/send", body, dt.datetime.now(dt.UTC), 300)  # raises if refused


@pytest.mark.parametrize(
    "target",
    [
        "/api/users/a b/skips",
        "/api/users/a%20b/skips",
        "/api/users/%C3%A9l%C3%A8ve/connections",
        "/api/users/o'neil/connections",
        "/api/threads/t-1/messages?user_id=a%2Bb%40x.com",
        "/api/threads/t-1/messages?user_id=a+b&user_id=c&empty=&flag",
        "/api/threads/t-1/messages/k/attachments/0?user_id=%E2%9C%93&code=k%2F%3D%3D",
        "/api/send?",
    ],
)
def test_the_documented_canonical_target_is_the_services(target: str) -> None:
    documented = readme_recipe()["canonical_target"]
    assert callable(documented)
    assert documented(target) == canonical_target(target)
