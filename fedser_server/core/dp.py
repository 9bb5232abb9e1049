"""DP-FedAvg on the server (McMahan et al. 2018): the accountant, the noise on the sum, adaptive clipping.

Epsilon always comes from Google's `dp-accounting` (RDP accountant for the Poisson-subsampled
Gaussian, composed over rounds); nothing here is a privacy formula. The guarantee is user-level:
one client's whole contribution to a round is clipped to C and the sum carries N(0, (z*C)^2).

`q` is the sampling rate, sampled / population. fedser samples a fixed number of clients per round
and accounts it as Poisson sampling at that rate, the usual approximation (McMahan et al. 2018).
Amplification by sampling protects a client against whoever does not know the sample (users of the
model); the server chose the sample, so against the server the figure that counts is
`epsilon_unamplified` over the rounds the client took part in. docs/privacy.md.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fedser_server.core.strategy import DELTA, FedAvg, RoundTotals
from fedser_shared.config import PrivacyConfig
from fedser_shared.dp import client_noise_std, clip_update, noise_adder, release, update_norm
from fedser_shared.errors import ConfigError, FedserError

if TYPE_CHECKING:  # dp_accounting pulls in scipy (seconds of start-up, ~60 MB): imported where epsilon is computed
    import dp_accounting

# integer orders: the library's series for fractional orders near 1 fails to converge at these sampling rates
_ORDERS = [*range(2, 64), 80, 96, 128, 192, 256, 512, 1024]


def _round_event(q: float, noise_multiplier: float, count_noise_multiplier: float | None) -> dp_accounting.DpEvent:
    import dp_accounting
    released: dp_accounting.DpEvent = dp_accounting.GaussianDpEvent(noise_multiplier)
    if count_noise_multiplier is not None:  # adaptive clipping also releases a noised count (sensitivity 1)
        released = dp_accounting.ComposedDpEvent([released, dp_accounting.GaussianDpEvent(count_noise_multiplier)])
    if q >= 1.0:
        return released
    return dp_accounting.PoissonSampledDpEvent(q, released)


@functools.lru_cache(maxsize=4096)  # a run asks for each round's epsilon more than once
def epsilon(rounds: int, q: float, noise_multiplier: float, delta: float,
            count_noise_multiplier: float | None = None) -> float:
    """Epsilon at `delta` after `rounds` rounds, each a Gaussian of multiplier z on a q-sampled population."""
    from dp_accounting.rdp import RdpAccountant
    if rounds <= 0:
        return 0.0
    if noise_multiplier == 0.0:
        return math.inf
    accountant = RdpAccountant(_ORDERS)
    accountant.compose(_round_event(q, noise_multiplier, count_noise_multiplier), rounds)
    return float(accountant.get_epsilon(delta))


def epsilon_of_rounds(rounds_at: Mapping[float, int], noise_multiplier: float, delta: float,
                      count_noise_multiplier: float | None = None) -> float:
    """Epsilon at `delta` after `rounds_at[q]` rounds at each sampling rate q (a run whose population changed)."""
    return _composed(tuple(sorted((q, n) for q, n in rounds_at.items() if n > 0)), noise_multiplier, delta,
                     count_noise_multiplier)


@functools.lru_cache(maxsize=4096)
def _composed(rounds_at: tuple[tuple[float, int], ...], noise_multiplier: float, delta: float,
              count_noise_multiplier: float | None) -> float:
    from dp_accounting.rdp import RdpAccountant
    if len(rounds_at) <= 1:  # one rate: the same composition as `epsilon`
        q, rounds = rounds_at[0] if rounds_at else (1.0, 0)
        return epsilon(rounds, q, noise_multiplier, delta, count_noise_multiplier)
    if noise_multiplier == 0.0:
        return math.inf
    accountant = RdpAccountant(_ORDERS)
    for q, rounds in rounds_at:
        accountant.compose(_round_event(q, noise_multiplier, count_noise_multiplier), rounds)
    return float(accountant.get_epsilon(delta))


def noise_for_epsilon(target_epsilon: float, rounds: int, q: float, delta: float,
                      count_noise_multiplier: float | None = None) -> float:
    """The smallest noise multiplier z whose `rounds` rounds spend at most `target_epsilon` (the accountant's search)."""
    import dp_accounting
    from dp_accounting import mechanism_calibration
    from dp_accounting.rdp import RdpAccountant
    def event(z: float) -> dp_accounting.DpEvent:
        return dp_accounting.SelfComposedDpEvent(_round_event(q, z, count_noise_multiplier), rounds)

    try:
        z = mechanism_calibration.calibrate_dp_mechanism(
            lambda: RdpAccountant(_ORDERS), event, target_epsilon, delta,
            mechanism_calibration.LowerEndpointAndGuess(1e-3, 1.0), tol=1e-4)
    except mechanism_calibration.NoBracketIntervalFoundError:
        raise ConfigError(f"privacy.target_epsilon: no noise multiplier reaches epsilon {target_epsilon:g} "
                          f"over {rounds} rounds at delta {delta:g}") from None
    return float(z)


@dataclass(frozen=True)
class PrivacyPlan:
    """What a run's DP needs at every round, fixed once the population is known."""

    mode: str                 # "central" | "distributed"
    noise_multiplier: float   # z
    q: float                  # sampled / population
    delta: float
    budget: float | None
    count_noise_multiplier: float | None = None  # adaptive clipping's count noise, None for a fixed C

    def epsilon_after(self, rounds: int) -> float:
        return epsilon(rounds, self.q, self.noise_multiplier, self.delta, self.count_noise_multiplier)

    def epsilon_unamplified(self, participations: int) -> float:
        """Against a server that knows the sample: a client's own participations, no sampling amplification."""
        return epsilon(participations, 1.0, self.noise_multiplier, self.delta, self.count_noise_multiplier)

    def to_json(self) -> str:
        """What a resumed run needs to go on spending from where it stopped (the budget comes from its config)."""
        return json.dumps({k: v for k, v in dataclasses.asdict(self).items() if k != "budget"})

    @classmethod
    def from_json(cls, text: str, budget: float | None) -> PrivacyPlan:
        fields = json.loads(text)
        return cls(str(fields["mode"]), float(fields["noise_multiplier"]), float(fields["q"]), float(fields["delta"]),
                   budget, None if fields["count_noise_multiplier"] is None else float(fields["count_noise_multiplier"]))

    def over_budget(self, next_round: int) -> str | None:
        """None while round `next_round` fits the budget; else the one-line reason the run stops."""
        return self.budget_reason(next_round, self.epsilon_after(next_round), self.epsilon_after(next_round - 1))

    def budget_reason(self, next_round: int, spent_after: float, spent_before: float) -> str | None:
        """None while `spent_after` (epsilon once round `next_round` is released) fits the budget; else why the run stops."""
        if self.budget is None or spent_after <= self.budget:
            return None
        return (f"privacy budget reached: round {next_round} would spend epsilon {spent_after:.3g} > "
                f"privacy.epsilon_budget {self.budget:g} (delta {self.delta:g}); "
                f"{next_round - 1} rounds done at epsilon {spent_before:.3g}")


def plan_privacy(mode: str, noise_multiplier: float | None, target_epsilon: float | None, delta: float,
                 budget: float | None, rounds: int, sampled: int, population: int,
                 adaptive: bool = False) -> PrivacyPlan:
    """Fix z (given, or the accountant's choice for target_epsilon over `rounds`) for this population."""
    if population <= 0:
        raise ConfigError("privacy: no client to sample")
    q = min(1.0, sampled / population)
    count_z = _count_noise_multiplier(sampled) if adaptive else None
    if noise_multiplier is None:
        if target_epsilon is None:
            raise ConfigError("privacy: give noise_multiplier or target_epsilon")
        noise_multiplier = noise_for_epsilon(target_epsilon, rounds, q, delta, count_z)
    return PrivacyPlan(mode, noise_multiplier, q, delta, budget, count_z)


def _count_noise_multiplier(sampled: int) -> float:
    """Std of the noise on the clipped-below count, as Andrew et al. 2021 recommend (expected clients / 20),
    in units of its sensitivity (1)."""
    return max(1.0, sampled / 20)


def adapt_clip_norm(clip_norm: float, norms: Iterable[float], quantile: float, lr: float,
                    count_noise_multiplier: float, rng: np.random.Generator) -> float:
    """One step of quantile-based adaptive clipping (Andrew et al. 2021): the share of updates whose norm was
    at most C, released with Gaussian noise, moves C geometrically toward the target quantile."""
    norms = list(norms)
    if not norms:
        return clip_norm
    below = sum(n <= clip_norm for n in norms) + rng.normal(0.0, count_noise_multiplier)
    share = below / len(norms)
    return clip_norm * math.exp(-lr * (share - quantile))


class DpFedAvg(FedAvg):
    """FedAvg on clipped updates with Gaussian noise on the sum: theta <- theta + eta_g (sum_i clip(delta_i) + N)/m.

    Every accepted update weighs 1 (an update's n_samples would scale its sensitivity); `noise_std` (z*C in
    central mode, 0 in distributed mode where the clients added it) is drawn from `rng` once per round on
    the summed delta.* tensors; m is the number of updates summed. Clipping happens before the sums
    (the caller's `delta_scale` on the gRPC path, `clip_update` in process)."""

    name = "dp-fedavg"

    def __init__(self, server_lr: float, rng: np.random.Generator) -> None:
        super().__init__(server_lr)
        self.rng = rng
        self.noise_std = 0.0

    def update_weight(self, n_samples: int) -> float:
        super().update_weight(n_samples)  # refuses an update without samples
        return 1

    def perturb(self, sums: Mapping[str, np.ndarray], totals: RoundTotals) -> None:
        if totals.n_updates and self.noise_std > 0.0:
            # every update weighs the same; a secure sum counts each in units of its (equal) weight
            unit = totals.weight_total / totals.n_updates
            for name, total in sums.items():
                if name.startswith(DELTA):
                    total += unit * self.rng.normal(0.0, self.noise_std, total.size)


def privacy_record(plan: PrivacyPlan, round_index: int, clip_norm: float) -> Mapping[str, float | None]:
    """The privacy fields of a round's metrics record."""
    return privacy_fields(plan, plan.epsilon_after(round_index), clip_norm, plan.q)


def privacy_fields(plan: PrivacyPlan, spent: float, clip_norm: float, q: float) -> dict[str, float | None]:
    """A round's privacy fields: epsilon spent after it, and the round's z, C and sampling rate q (exact: a
    resumed run accounts its rounds again from them)."""
    # no noise, no guarantee: epsilon is infinite, written as null (metrics.jsonl is strict JSON)
    return {"dp_epsilon": None if math.isinf(spent) else round(spent, 4), "dp_delta": plan.delta,
            "dp_noise_multiplier": round(plan.noise_multiplier, 5), "dp_clip_norm": round(clip_norm, 6), "dp_q": q}


class PrivacyBudgetReached(FedserError):
    """The next round would spend more epsilon than privacy.epsilon_budget: the run stops cleanly."""

    reason = "privacy_budget"


@dataclass
class DpRounds:
    """DP-FedAvg across a run's rounds: the plan, the current clip norm, and what each side does per round.

    `release` is the client's step (distributed: clip, then noise of std z*C/sqrt(m)); `receive` the server's
    (central: clip); `close` feeds the updates' norms to adaptive clipping. Randomness comes in as Generators."""

    plan: PrivacyPlan
    clip_norm: float
    adaptive_quantile: float | None = None
    adaptive_lr: float = 0.2

    def check_budget(self, next_round: int) -> None:
        reason = self.plan.over_budget(next_round)
        if reason is not None:
            raise PrivacyBudgetReached(reason)

    def release(self, update: Mapping[str, np.ndarray], n_sampled: int, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], float]:
        """What a client sends: in distributed mode clipped and noised; otherwise unchanged. Also its norm."""
        if self.plan.mode != "distributed":
            return dict(update), update_norm(update)
        return release(update, self.clip_norm, self.client_noise_std(n_sampled), rng)

    def receive(self, update: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """What the server sums: in central mode the update clipped to C; in distributed mode as received."""
        return clip_update(update, self.clip_norm)[0] if self.plan.mode == "central" else dict(update)

    def client_noise(self, n_sampled: int, rng_for: Callable[[str], np.random.Generator]
                     ) -> Callable[[str], Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] | None] | None:
        """Distributed mode: for each client, what adds its share of the noise to its clipped values (the hook
        secure aggregation calls before quantising and masking); None in central mode."""
        if self.plan.mode != "distributed":
            return None
        std = self.client_noise_std(n_sampled)

        def transform_for(name: str) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] | None:
            return noise_adder(std, rng_for(name))

        return transform_for

    def client_noise_std(self, n_sampled: int) -> float:
        """Distributed mode: each of the round's `n_sampled` clients' share of the noise; 0 in central mode."""
        if self.plan.mode != "distributed":
            return 0.0
        return client_noise_std(self.plan.noise_multiplier, self.clip_norm, n_sampled)

    @property
    def sum_noise_std(self) -> float:
        return self.plan.noise_multiplier * self.clip_norm if self.plan.mode == "central" else 0.0

    def close(self, norms: Iterable[float], rng: np.random.Generator) -> None:
        if self.adaptive_quantile is not None and self.plan.count_noise_multiplier is not None:
            self.clip_norm = adapt_clip_norm(self.clip_norm, norms, self.adaptive_quantile, self.adaptive_lr,
                                             self.plan.count_noise_multiplier, rng)

    def record(self, round_index: int) -> dict[str, float | None]:
        return dict(privacy_record(self.plan, round_index, self.clip_norm))


def dp_rounds(privacy: PrivacyConfig, rounds: int, sampled: int, population: int) -> DpRounds:
    """The run's DP once its population is known (z from the accountant when a target epsilon is given)."""
    adaptive = privacy.adaptive_clip_quantile is not None
    plan = plan_privacy(privacy.dp, privacy.noise_multiplier, privacy.target_epsilon, privacy.delta,
                        privacy.epsilon_budget, rounds, sampled, population, adaptive)
    return DpRounds(plan, privacy.clip_norm, privacy.adaptive_clip_quantile, privacy.adaptive_clip_lr)


def resumed_dp_rounds(privacy: PrivacyConfig, saved_plan: str) -> DpRounds:
    """A resumed run's DP: the plan it fixed at its first round (saved as `PrivacyPlan.to_json`), with a fixed C."""
    if privacy.adaptive_clip_quantile is not None:
        raise ConfigError("privacy.adaptive_clip_quantile: a resumed run cannot restore its adapted clip norm")
    plan = PrivacyPlan.from_json(saved_plan, privacy.epsilon_budget)
    if plan.mode != privacy.dp:
        raise ConfigError(f"privacy.dp is '{privacy.dp}' but the run being resumed spent its budget in '{plan.mode}' mode")
    return DpRounds(plan, privacy.clip_norm)
