"""What a request meets when its Ray Serve replica dies, for tensor and language models alike.

`ReplicaLost` is the 503 with Retry-After of a request whose replica died (and whose one retry
failed too): an `Overloaded`, so every route already answers it as a full queue is answered.

Ray sends a replica's exception to the ingress pickled. `Overloaded` builds its message from the
model's name, so pickled by its args (what Ray does) it came back with the message wrapped in a
second one; the rule registered here keeps it as it was. Importing this module registers it, and
both maaslab.scale.ray_serve and maaslab.scale.ray_llm import it.
"""

from __future__ import annotations

import copyreg

from maaslab.serve.batching import Overloaded


class ReplicaLost(Overloaded):
    """The replica running a request died and the retry failed too: 503, try again."""

    def __init__(self, model: str, why: str, retry_after: int = 1) -> None:
        Exception.__init__(
            self,
            f"model {model!r}: the replica running this request stopped ({why}); Ray Serve "
            f"restarts it; retry after {retry_after} s",
        )
        self.retry_after = retry_after


def _overloaded(message: str, retry_after: int) -> Overloaded:
    made = Overloaded.__new__(Overloaded)
    Exception.__init__(made, message)
    made.retry_after = retry_after
    return made


copyreg.pickle(Overloaded, lambda e: (_overloaded, (str(e), e.retry_after)))
