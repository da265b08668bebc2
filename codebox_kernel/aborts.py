"""Stop on error through the relay: which execute_requests are aborted after a cell fails, and which are not.

Jupyter's rule: after a cell fails (stop_on_error), the cells the frontend had already sent (Run All) are
aborted; a cell sent after the frontend saw the error runs. ipykernel 6 keeps it with a flag it sets on the
error and clears from a callback scheduled with no delay; asyncio runs the I/O callbacks that are ready before
that timer, so a request that arrives in that instant is aborted too. Locally that instant is microseconds;
through the host's relay, with the box's kernel emulated, the frontend's next cell can land in it.

The host knows which side of the error every request is on: it counts the error replies it relays (the error
epoch) and stamps each request with the epoch in which it arrived.
- A request from the current epoch came after the last error reply: an `aborted` reply to it is swallowed and
  the request is sent to the box again (`StopOnError.retry`), a few times at most.
- After an error reply the first execute_request goes to the box alone (the probe); the requests behind it wait
  until it is answered, so a retried probe cannot overtake a cell sent after it. One of them that arrived
  before the error it waited for is aborted by the host, as the box would have done (`StopOnError.stale`).
`Tries` makes a request sent more than once look like one to the frontend: one busy, the reply, then one idle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# How often one request is sent to the box again after an abort it did not deserve. Under emulation the try
# sent again can land in the same window too (measured: 19 of 21 cells sent at once after an error were
# retried, 4 of those twice, none more), so there is room well beyond what was seen; past it the frontend gets
# the abort.
RETRIES = 10


def stops_on_error(request: dict[str, Any], reply: dict[str, Any]) -> bool:
    """Whether an execute_reply makes ipykernel abort what is queued behind it (its own test)."""
    return (reply.get("status") == "error" and bool(request.get("stop_on_error", True))
            and not request.get("silent", False))


@dataclass
class StopOnError:
    """The error epoch: how many error replies that stop on error the host relayed to the frontend."""

    epoch: int = 0
    probed: int = 0  # the epoch whose first execute_request went to the box

    def relayed(self, request: dict[str, Any], reply: dict[str, Any]) -> None:
        """An execute_reply to `request` went to the frontend."""
        if stops_on_error(request, reply):
            self.epoch += 1

    def retry(self, received: int, reply: dict[str, Any], tries: int) -> bool:
        """Whether to swallow `reply` and send again a request received in epoch `received`, sent `tries`
        times: it was aborted, yet it came after every error relayed so far."""
        return reply.get("status") == "aborted" and received == self.epoch and tries <= RETRIES

    def stale(self, received: int) -> bool:
        """Whether a request received in epoch `received` was sent before an error reply went out: aborted."""
        return received != self.epoch

    def take_probe(self) -> bool:
        """Whether the next execute_request is the first one after an error (it goes to the box alone)."""
        if self.probed == self.epoch:
            return False
        self.probed = self.epoch
        return True


@dataclass
class Tries:
    """The iopub status messages of one execute_request the host may send to the box more than once. The box
    says busy and idle for every try; the frontend gets the first busy and the last try's idle, after the reply
    (JupyterLab ends a cell on its reply and idle: an aborted try's idle would end it before it ran)."""

    sent: int = 1
    busy: bool = False  # a busy went to the frontend
    idles: int = 0  # idles the box said for it
    replied: bool = False  # the last try's reply went to the frontend
    held: dict[str, Any] | None = None  # the last try's idle, until its reply has gone

    def status(self, msg: dict[str, Any]) -> list[dict[str, Any]]:
        """What to pass on to the frontend of a status message the box said for this request."""
        state = (msg.get("content") or {}).get("execution_state")
        if state == "busy":
            if self.busy:
                return []
            self.busy = True
            return [msg]
        if state != "idle":
            return [msg]
        self.idles += 1
        if self.idles < self.sent:  # an aborted try's
            return []
        if self.replied:
            return [msg]
        self.held = msg
        return []

    def again(self) -> None:
        """The last try was aborted and the request is sent again: its idle (if it came) is not passed on."""
        self.sent += 1
        self.held = None

    def reply(self) -> list[dict[str, Any]]:
        """The reply went to the frontend: the idle to pass on after it, if it came first."""
        self.replied = True
        held, self.held = self.held, None
        return [held] if held is not None else []

    @property
    def done(self) -> bool:
        return self.replied and self.idles >= self.sent
