"""DP-FedAvg across a gRPC run (docs/privacy.md): the run's plan, what each round's tasks tell the
clients, the noise the strategy adds to the sum, and the epsilon spent so far.

The maths is `core.dp` (the same `DpRounds` the in-process engine drives): z is fixed once, at the
first round, when the population is known, and saved in the state dir. Each released round is
accounted at its own sampling rate (sampled / alive trainable clients: the population of a gRPC run
changes), recorded exactly in its metrics line; a resumed run accounts again the rounds its metrics
hold (one per completed round, reconciled with the checkpoint) and goes on spending from there.

Who clips where: in central mode the server clips each plaintext update on receipt (its norm is
measured as it streams in: `SummedUpdates`); under secure aggregation, or in distributed mode,
the clients clip (the task's `dp_clip_norm`). Distributed mode: each client adds its share of the
noise (the task's `dp_noise_std`); central mode: the server adds z*C to the round's sum once,
through `DpFedAvg.perturb` when the round closes.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Mapping

from fedser_server.core.dp import (
    DpFedAvg,
    DpRounds,
    PrivacyBudgetReached,
    dp_rounds,
    epsilon_of_rounds,
    privacy_fields,
    resumed_dp_rounds,
)
from fedser_server.core.round_plan import TaskSpec
from fedser_server.core.strategy import Strategy
from fedser_server.state.store import StateStore
from fedser_shared.config import RunConfig
from fedser_shared.errors import StateError
from fedser_shared.logging import get_logger

log = get_logger(__name__)

__all__ = ["PrivacyBudgetReached", "RunPrivacy"]


class RunPrivacy:
    """One run's differential privacy on the server; inert when privacy.dp is off."""

    def __init__(self, config: RunConfig, store: StateStore, strategy: Strategy,
                 records: Iterable[Mapping[str, object]] = ()) -> None:
        """`records`: the metrics lines of the rounds completed so far (a resumed run's)."""
        self._config, self._store, self._strategy = config, store, strategy
        self.dp: DpRounds | None = None
        self.released: Counter[float] = Counter()  # rounds released, by sampling rate
        self._q: float | None = None  # the sampling rate of the round being planned
        if not config.privacy.dp_enabled:
            return
        records = list(records)
        if not records:  # nothing released yet: the first round makes the plan (again)
            return
        saved = store.load_privacy_plan()
        if saved is None:
            raise StateError(f"{store.dir} holds {len(records)} rounds of a run with privacy.dp but not its "
                             "privacy plan: the epsilon they spent cannot be restored")
        if any(not isinstance(r.get("dp_q"), float | int) for r in records):
            raise StateError(f"a metrics line in {store.dir} lacks its round's sampling rate (dp_q): the epsilon "
                             "spent cannot be restored")
        self._use(resumed_dp_rounds(config.privacy, saved))
        self.released = Counter(float(r["dp_q"]) for r in records)  # type: ignore[arg-type]
        log.info("privacy_restored", rounds_released=len(records), epsilon=self._spent(self.released))

    @property
    def enabled(self) -> bool:
        return self._config.privacy.dp_enabled

    def plan(self, round_index: int, n_sampled: int, population: int) -> None:
        """A round's attempt samples `n_sampled` of `population` clients: the first one fixes z for the run.
        Raises PrivacyBudgetReached when releasing this round would spend more than the budget."""
        if not self.enabled:
            return
        if self.dp is None:
            dp = dp_rounds(self._config.privacy, self._config.federation.rounds, n_sampled, population)
            self._store.save_privacy_plan(dp.plan.to_json())
            self._use(dp)
            log.info("privacy_planned", mode=dp.plan.mode, noise_multiplier=round(dp.plan.noise_multiplier, 5),
                     q=round(dp.plan.q, 5), clip_norm=dp.clip_norm, delta=dp.plan.delta, budget=dp.plan.budget)
        assert self.dp is not None
        self._q = min(1.0, n_sampled / max(1, population))
        after = self._spent(self.released + Counter({self._q: 1}))
        reason = self.dp.plan.budget_reason(round_index, after, self._spent(self.released))
        if reason is not None:
            raise PrivacyBudgetReached(reason)

    def _spent(self, released: Counter[float]) -> float:
        assert self.dp is not None
        plan = self.dp.plan
        return epsilon_of_rounds(released, plan.noise_multiplier, plan.delta, plan.count_noise_multiplier)

    def _use(self, dp: DpRounds) -> None:
        self.dp = dp
        if isinstance(self._strategy, DpFedAvg):
            self._strategy.noise_std = dp.sum_noise_std  # central: z*C on the sum; distributed: none

    def task_spec(self, spec: TaskSpec, n_sampled: int) -> TaskSpec:
        """What a round's training tasks tell its `n_sampled` clients to do before their update leaves."""
        if self.dp is None:
            return spec
        clients_clip = self._config.privacy.secure or self.dp.plan.mode == "distributed"
        return dataclasses.replace(spec, dp_clip_norm=self.dp.clip_norm if clients_clip else 0.0,
                                   dp_noise_std=self.dp.client_noise_std(n_sampled))

    @property
    def server_clip_norm(self) -> float | None:
        """Central mode without secure aggregation: the C the server clips each plaintext update to on receipt."""
        if self.dp is None or self.dp.plan.mode != "central" or self._config.privacy.secure:
            return None
        return self.dp.clip_norm

    @property
    def sum_within_bounds(self) -> bool:
        """Whether a secure round's sum can be checked against the clients' clip bounds (not with noise in it)."""
        return self.dp is None or self.dp.plan.mode != "distributed"

    def release(self) -> dict[str, float | None]:
        """The round planned last was released (its new model made): its privacy fields for its metrics line,
        epsilon spent after it included; none without DP."""
        if self.dp is None or self._q is None:
            return {}
        self.released[self._q] += 1
        return privacy_fields(self.dp.plan, self._spent(self.released), self.dp.clip_norm, self._q)

    def stopped(self, reason: str) -> None:
        self._store.write_stop_reason(reason)
