"""One invocation of a user function, logged the way the Functions host logs it."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger("devtools.local_host")


def invoke(
    function_name: str, reason: str, user_function: Callable[..., Any], bind: Callable[[], Mapping[str, Any]]
) -> Any:
    """Bind the trigger input, call the function (awaiting it if async), log Executing/Executed; re-raise failures.

    Binding happens inside the invocation, as in the host: a message that cannot be decoded is a failed run.
    """
    invocation_id = uuid.uuid4()
    log.info("Executing 'Functions.%s' (Reason='%s', Id=%s)", function_name, reason, invocation_id)
    started = time.monotonic()
    try:
        arguments = bind()
        result = user_function(**arguments)
        if inspect.isawaitable(result):
            result = asyncio.run(_awaited(result))
    except Exception:
        log.exception(
            "Executed 'Functions.%s' (Failed, Id=%s, Duration=%dms)", function_name, invocation_id, _ms(started)
        )
        raise
    log.info("Executed 'Functions.%s' (Succeeded, Id=%s, Duration=%dms)", function_name, invocation_id, _ms(started))
    return result


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def _ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)
