"""The README's recipe for signing a connect link is the one the service checks (a new integrator follows it)."""

import datetime as dt
import re
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from sync_core.connect import ConnectLink
from sync_core.signing import sign_link, verify_link

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_documented_connect_link_recipe_signs_as_the_service_verifies() -> None:
    section = README.read_text().split("### Signed connect links", 1)[1]
    [code] = re.findall(r"```python\n(.*?)```", section.split("\n## ", 1)[0], re.DOTALL)
    scope: dict[str, object] = {"SHARED_SECRET": b"the secret agreed with Enrollio"}
    exec(code, scope)  # noqa: S102 (the README's own snippet, as written: repository text, not input)
    params = dict(parse_qsl(urlsplit(str(scope["link"])).query))
    assert (
        params["sig"]
        == sign_link(b"the secret agreed with Enrollio", {k: v for k, v in params.items() if k != "sig"})["sig"]
    )
    verify_link(b"the secret agreed with Enrollio", params, dt.datetime.now(dt.UTC))  # raises if refused
    ConnectLink.model_validate(params)  # every field within the rules the service checks next (nonce included)
