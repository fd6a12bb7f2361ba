"""Operator controls: see a destination's state, pause it, resume it."""

from __future__ import annotations

from dataclasses import dataclass

from dispatcher import keys
from dispatcher.client import Dispatcher
from dispatcher.storage import translate_redis_errors


@dataclass(frozen=True)
class DestinationStatus:
    """What an operator needs to know about one destination."""

    destination: str
    platform: str
    backlog: int  # undelivered events, in flight included
    in_flight: int  # taken by a drain and not yet acknowledged
    paused: bool
    pause_reason: str
    next_attempt_at_ms: int
    last_error: str
    delivered: int
    dead: int


class Control:
    """Pause, resume and inspect destinations."""

    def __init__(self, dispatcher: Dispatcher | None = None) -> None:
        self.dispatcher = dispatcher or Dispatcher()

    def status(self, destination: str) -> DestinationStatus:
        """The state of one destination."""
        platform = self.dispatcher.settings.destination(destination).platform
        r = self.dispatcher.redis
        with translate_redis_errors():
            pipe = r.pipeline(transaction=False)
            pipe.xlen(keys.stream(destination))
            pipe.hgetall(keys.state(destination))
            backlog, state = pipe.execute()
            in_flight = 0
            if backlog:
                in_flight = int(r.xpending(keys.stream(destination), keys.GROUP)["pending"])
        text = {k.decode(): v.decode() for k, v in state.items()}
        return DestinationStatus(
            destination=destination,
            platform=platform,
            backlog=int(backlog),
            in_flight=in_flight,
            paused=bool(text.get("paused")),
            pause_reason=text.get("pause_reason", ""),
            next_attempt_at_ms=int(text.get("next_at_ms", 0)),
            last_error=text.get("last_error", ""),
            delivered=int(text.get("delivered", 0)),
            dead=int(text.get("dead", 0)),
        )

    def pause(self, destination: str, reason: str = "paused by operator") -> None:
        """Stop delivering to `destination`; events keep waiting in Redis."""
        fingerprint = self.dispatcher.settings.destination(destination).fingerprint()
        with translate_redis_errors():
            self.dispatcher.redis.hset(
                keys.state(destination),
                mapping={"paused": 1, "paused_fp": fingerprint, "pause_reason": reason},
            )

    def resume(self, destination: str) -> None:
        """Deliver again (after a pause by an operator or by a 401/403) and drain at once."""
        platform = self.dispatcher.settings.destination(destination).platform
        with translate_redis_errors():
            pipe = self.dispatcher.redis.pipeline(transaction=True)
            pipe.hdel(keys.state(destination), "paused", "paused_fp", "pause_reason", "next_at_ms")
            pipe.zadd(keys.due(platform), {destination: 0})  # due now
            pipe.execute()
