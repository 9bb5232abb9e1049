"""One secure round on the server (privacy.secure_aggregation = "secagg+"): the SecAgg+ state
machine of `fedser_shared.secagg`, the client ids behind its node numbers, and the clients' stage
calls, each of which waits until its stage closes for the whole round.

The round loop drives it: `drive` closes each stage once every expected client answered or the
stage's deadline passed (the first stage's deadline is the round's), and returns the unmasked,
checked sum; the servicer's SecAgg* handlers call `advertise`, `share`, `mask` and `unmask`.
The server holds only the running sum of masked inputs: no client's update, masked or not, is
kept or written anywhere.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedser_server.clock import WAKE_S, Clock
from fedser_server.core.secure_aggregation import round_threshold
from fedser_shared.config import PrivacyConfig
from fedser_shared.errors import (
    FedserError,
    NotParticipatingError,
    SecAggStageError,
    ServerStoppingError,
    StaleRoundError,
)
from fedser_shared.logging import get_logger
from fedser_shared.secagg import (
    DecodedSum,
    EncryptedShare,
    KeyAdvert,
    SecAggServer,
    UnmaskReply,
    UnmaskRequest,
    VectorLayout,
    decode,
)

log = get_logger(__name__)

STAGES = ("advertise", "share", "mask", "unmask")


@dataclass(frozen=True)
class PeerKeys:
    """What a client learns when the key stage closes."""

    node: int
    threshold: int
    context: bytes
    n_clients: int
    vector_length: int
    peers: dict[int, KeyAdvert]


class SecureRound:
    def __init__(self, privacy: PrivacyConfig, layout: VectorLayout, round_index: int, tasks: Mapping[str, str],
                 graph_seed: int) -> None:
        """`tasks`: client id -> its training task id, for the round's sampled clients."""
        self.round_index, self.layout, self.tasks = round_index, layout, dict(tasks)
        self.node_of = {client_id: node for node, client_id in enumerate(sorted(tasks), 1)}
        self.client_of = {node: client_id for client_id, node in self.node_of.items()}
        self.threshold = round_threshold(privacy, len(tasks))
        # every key and share is bound to this attempt of this round
        self.context = hashlib.sha256(repr((round_index, sorted(tasks.items()))).encode()).digest()
        self._machine = SecAggServer(len(tasks), self.threshold, privacy.secagg_neighbours, graph_seed, self.context,
                                     layout.length)
        self._cond = threading.Condition()
        self._outputs: dict[str, Mapping[int, Any]] = {}
        self._failure: FedserError | None = None

    # ------------------------------------------------------------ the clients' side
    def _node(self, client_id: str, round_index: int, task_id: str) -> int:
        if round_index != self.round_index or self.tasks.get(client_id) != task_id:
            raise (NotParticipatingError if client_id not in self.tasks else StaleRoundError)(
                f"task '{task_id}' of round {round_index} is not this client's secure round")
        return self.node_of[client_id]

    def _answer(self, stage: str, client_id: str, round_index: int, task_id: str, deliver: Callable[[int], None],
                timeout_s: float) -> Any:
        """Hand the stage its message, then wait until the stage closes: this client's share of its output."""
        with self._cond:
            if self._failure is not None:
                raise self._failure
            node = self._node(client_id, round_index, task_id)
            deliver(node)
            self._cond.notify_all()
            if not self._cond.wait_for(lambda: stage in self._outputs or self._failure is not None, timeout_s):
                raise SecAggStageError(f"secure aggregation stage '{stage}' did not close in time")
            if stage not in self._outputs:
                assert self._failure is not None
                raise self._failure
            if node not in self._outputs[stage]:
                raise StaleRoundError(f"this client was counted as dropped at secure aggregation stage '{stage}'")
            return self._outputs[stage][node]

    def advertise(self, client_id: str, round_index: int, task_id: str, advert: KeyAdvert, timeout_s: float,
                  joined: Callable[[], None] = lambda: None) -> PeerKeys:
        """`joined` is called once the keys are taken (the client's task is then answered)."""
        def deliver(node: int) -> None:
            self._machine.receive_advert(node, advert)
            joined()
        return self._answer("advertise", client_id, round_index, task_id, deliver, timeout_s)  # type: ignore[no-any-return]

    def share(self, client_id: str, round_index: int, task_id: str, shares: list[EncryptedShare],
              timeout_s: float) -> list[EncryptedShare]:
        def deliver(node: int) -> None:
            self._machine.receive_shares(node, shares)
        return self._answer("share", client_id, round_index, task_id, deliver, timeout_s)  # type: ignore[no-any-return]

    def mask(self, client_id: str, round_index: int, task_id: str, masked: np.ndarray, timeout_s: float) -> UnmaskRequest:
        def deliver(node: int) -> None:
            self._machine.receive_masked(node, masked)
        return self._answer("mask", client_id, round_index, task_id, deliver, timeout_s)  # type: ignore[no-any-return]

    def unmask(self, client_id: str, round_index: int, task_id: str, reply: UnmaskReply) -> None:
        with self._cond:
            if self._failure is not None:
                raise self._failure
            self._machine.receive_unmask(self._node(client_id, round_index, task_id), reply)
            self._cond.notify_all()

    # ------------------------------------------------------------ the round loop's side
    def drive(self, clock: Clock, first_deadline: float, stage_timeout_s: float, stopping: Callable[[], bool],
              check_norm: bool = True) -> DecodedSum | None:
        """Run the stages to the unmasked, checked sum; None when stopped. Raises a SecAggError when
        the round cannot be unmasked (too many dropped, or a sum out of bounds): nothing is folded then."""
        deadline = first_deadline
        try:
            for stage in STAGES:
                with self._cond:
                    while self._machine.waiting_for() and clock() < deadline:
                        if stopping():
                            self._failure = ServerStoppingError("the server is stopping: the secure round ends")
                            self._cond.notify_all()
                            return None
                        self._cond.wait(min(WAKE_S, max(0.0, deadline - clock())))
                    late = sorted(self.client_of[n] for n in self._machine.waiting_for())
                    if late:
                        log.warning("secagg_stage_deadline", round=self.round_index, stage=stage, dropped=late)
                    self._outputs[stage] = self._close(stage)
                    self._cond.notify_all()
                deadline = clock() + stage_timeout_s
            result = self._outputs["unmask"][0]
            return decode(result.total, self.layout, len(result.survivors), check_norm)
        except FedserError as error:
            with self._cond:
                self._failure = error
                self._cond.notify_all()
            raise

    def _close(self, stage: str) -> Mapping[int, Any]:
        machine = self._machine
        if stage == "advertise":
            peers = machine.close_advertise()
            return {node: PeerKeys(node, self.threshold, self.context, len(self.tasks), self.layout.length, keys)
                    for node, keys in peers.items()}
        if stage == "share":
            return machine.close_shares()
        if stage == "mask":
            return machine.close_masked()
        result = machine.finish()
        log.info("secagg_unmasked", round=self.round_index, survivors=len(result.survivors), of=len(self.tasks))
        return {0: result}

    @property
    def survivors(self) -> list[str]:
        """Client ids whose inputs are in the sum (after `drive` returned it)."""
        result = self._outputs.get("unmask", {}).get(0)
        return sorted(self.client_of[n] for n in result.survivors) if result is not None else []
