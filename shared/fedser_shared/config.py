"""The typed run configuration: one TOML file, overridable by CLI flags, validated once.

Every number in DESIGN §5 is a field here with that default. Server and clients share
the same `RunConfig`: the server sends it to each client when it joins.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fedser_shared.errors import ConfigError

DEFAULT_EMOTION_MAP: dict[str, int] = {
    "neutral": 0, "neu": 0,
    "happy": 1, "happiness": 1, "hap": 1, "joy": 1,
    "sad": 2, "sadness": 2,
    "angry": 3, "anger": 3, "ang": 3,
}
DEFAULT_CLASS_NAMES = ["neutral", "happy", "sad", "angry"]
FEATURE_DIMS = {"emobase": 988, "egemaps": 88, "compare": 6373, "apc": 512, "tera": 768, "decoar2": 768, "distilhubert": 768}
IDLE_POLL_JITTER = (0.75, 1.25)  # an idle poll's come-back time is federation.idle_poll_s times a draw from this range
OPENSMILE_NAMES = ("emobase", "egemaps", "compare")  # openSMILE functionals; the other features are s3prl upstreams


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class LabelsConfig(_Section):
    """How emotion names in a data dir map to the model's classes."""

    class_names: list[str] = Field(default_factory=lambda: list(DEFAULT_CLASS_NAMES), min_length=2)
    """Emotion classes in class-index order; the model has one output per name."""
    emotion_map: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_EMOTION_MAP))
    """Emotion spelling in labels.csv or manifest.csv (lower case) -> class index; other emotions are ignored and counted."""

    @model_validator(mode="after")
    def _classes_in_range(self) -> LabelsConfig:
        for emotion, index in self.emotion_map.items():
            if not 0 <= index < len(self.class_names):
                raise ValueError(f"emotion '{emotion}' maps to class {index}, outside 0..{len(self.class_names) - 1}")
        return self

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def class_of(self, emotion: str) -> int | None:
        return self.emotion_map.get(emotion.strip().lower())


class FeaturesConfig(_Section):
    """What each client extracts from its audio; server and clients must agree."""

    name: Literal["emobase", "egemaps", "compare", "apc", "tera", "decoar2", "distilhubert"] = "emobase"
    """Utterance features: openSMILE functionals (emobase 988; egemaps = eGeMAPSv02, 88; compare = ComParE_2016, 6,373) or an s3prl upstream's last hidden layer averaged over time (apc 512; tera, decoar2, distilhubert 768)."""
    normalisation: Literal["client", "none"] = "client"
    """Feature z-scoring: each client with its own statistics (client), or none. DESIGN §5's federated 'global' statistics are not implemented and refused."""

    @model_validator(mode="before")
    @classmethod
    def _refuse_global(cls, values: Any) -> Any:
        if isinstance(values, dict) and values.get("normalisation") == "global":
            raise ValueError("normalisation 'global' (a federated mean/variance) is not implemented; use 'client' or 'none'")
        return values


class ModelConfig(_Section):
    """The MLP trained by the federation."""

    hidden: list[int] = Field(default_factory=lambda: [256, 128], min_length=1)
    """Hidden-layer widths of the MLP (features -> hidden... -> classes)."""
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    """Dropout after each hidden layer while training."""


class TrainConfig(_Section):
    """Local training on each client."""

    optimizer: Literal["sgd", "adam"] = "sgd"
    """Local optimizer."""
    lr: float = Field(0.05, gt=0.0)
    """Initial local learning rate; the server sends the decayed value with each task."""
    lr_decay_every: int = Field(100, ge=1, description="rounds between learning-rate decays")
    lr_decay_factor: float = Field(0.5, gt=0.0, le=1.0)
    """Factor applied to the learning rate every lr_decay_every rounds."""
    batch_size: int = Field(16, ge=1)
    """Local mini-batch size."""
    local_epochs: int = Field(1, ge=1)
    """Local epochs per participation."""
    adam_betas: tuple[float, float] = (0.9, 0.98)
    """Adam (beta1, beta2)."""
    adam_eps: float = Field(1e-9, gt=0.0)
    """Adam epsilon."""
    adam_weight_decay: float = Field(1e-4, ge=0.0)
    """Adam weight decay."""
    class_balance_beta: float = Field(0.9999, ge=0.0, lt=1.0)
    """Beta of the class-balanced loss weights (effective number of samples)."""
    eval_fraction: float = Field(0.2, ge=0.0, lt=1.0, description="share of each client's data kept for local evaluation")


class SemiConfig(_Section):
    """Semi-supervised local training: stochastic feature augmentation and multiview pseudo-labeling."""

    enabled: bool = False
    """Train on unlabeled audio too (Semi-FedSER), with the local method below."""
    method: Literal["mvpl", "fixmatch", "supervised"] = "mvpl"
    """Local semi-supervised method: the paper's multiview pseudo-labels (a growing pool, few per participation), FixMatch (every step: confident weak-view predictions supervise strong views), or supervised: the same weak views of the labels, client sampling and local steps with no unlabeled term (the fair baseline of the other two)."""
    weak_sigma1: float = Field(0.1, ge=0.0)
    """Weak feature augmentation: std of the multiplicative noise, alpha ~ N(1, sigma1^2)."""
    weak_sigma2: float = Field(0.1, ge=0.0)
    """Weak feature augmentation: std of the additive noise, r ~ N(0, sigma2^2)."""
    strong_sigma1: float = Field(0.25, ge=0.0)
    """Strong feature augmentation: std of the multiplicative noise."""
    strong_sigma2: float = Field(0.1, ge=0.0)
    """Strong feature augmentation: std of the additive noise."""
    views: int = Field(10, ge=2)
    """Weak views per unlabeled sample when pseudo-labeling."""
    temperature: float = Field(2.0, gt=0.0)
    """Softmax temperature for the views' predictions."""
    uncertainty_max: float = Field(0.005, ge=0.0)
    """Largest std over views of the winning class probability (kappa) for a pseudo-label."""
    tau_start: float = Field(0.5, ge=0.0, le=1.0)
    """Confidence threshold at round 1."""
    tau_end: float = Field(0.9, ge=0.0, le=1.0)
    """Confidence threshold after the ramp."""
    tau_ramp_fraction: float = Field(0.6, gt=0.0, le=1.0)
    """Share of the rounds over which the threshold rises linearly from tau_start to tau_end."""
    max_per_class: int = Field(1, ge=0)
    """New pseudo-labels per class per participation, lowest uncertainty first."""
    pseudo_weight: float = Field(1.0, ge=0.0, description="lambda, weight of the pseudo-label loss")
    fixmatch_threshold: float = Field(0.95, ge=0.0, le=1.0)
    """FixMatch: softmax confidence on a weak view above which its prediction supervises the strong view."""
    distribution_alignment: bool = False
    """FixMatch: scale predictions by the client's labeled class prior over the model's mean prediction on its unlabeled rows (ReMixMatch); a client without labels knows no prior and aligns nothing."""
    unlabeled_ratio: int = Field(7, ge=1)
    """FixMatch: unlabeled rows per labeled row in each step (mu, 7 as in the FixMatch paper). A client takes the steps of its labeled rows (one pass in batches of batch_size); one without labels takes one pass over its unlabeled rows in batches of mu * batch_size."""
    strong_mixup: float = Field(0.0, ge=0.0, le=0.5)
    """Strong view option: mix each unlabeled row with another of its batch, taking up to this share of the other (uniform in [0, strong_mixup]); 0 = off."""
    strong_mask: float = Field(0.0, ge=0.0, lt=1.0)
    """Strong view option: share of the (z-scored) features set to 0 in each row, at random; 0 = off."""
    strong_style: bool = False
    """Strong view option: re-normalise each row as if it came from another speaker, with a random entry of the client's speaker-statistics bank (set by the simulation or benchmark; empty otherwise, then off)."""


class FederationConfig(_Section):
    """Rounds, client sampling, aggregation and deadlines, decided by the server."""

    algorithm: Literal["fedavg", "scaffold"] = "fedavg"
    """Server strategy: FedAvg, or SCAFFOLD with control variates."""
    rounds: int = Field(50, ge=1)
    """Training rounds in the run."""
    min_clients: int = Field(2, ge=1)
    """Fewest alive clients a round needs; also the fewest it samples."""
    fraction: float = Field(0.2, gt=0.0, le=1.0)
    """Share of alive clients sampled per round: max(min_clients, ceil(fraction * alive))."""
    min_updates: int | None = Field(None, ge=1, description="updates needed to close a round at its deadline; default min_clients")
    start_clients: int | None = Field(None, ge=1, description="clients that must have joined before round 1; default min_clients")
    eval_every: int = Field(5, ge=1)
    """Rounds between evaluations on every alive client; the last round is always evaluated."""
    server_lr: float = Field(1.0, gt=0.0)
    """Server learning rate applied to the weighted mean update."""
    c_update: Literal["paper", "semifedser"] = "paper"
    """SCAFFOLD control-variate update: paper scales the mean delta by |S|/N; semifedser adds the plain mean."""
    round_timeout_s: float = Field(600.0, gt=0.0)
    """Seconds a training round waits for its sampled clients."""
    eval_timeout_s: float = Field(300.0, gt=0.0)
    """Seconds an evaluation waits for its clients."""
    max_round_retries: int = Field(3, ge=0)
    """Fresh samples tried when a round ends with too few updates, before waiting for clients again."""
    poll_timeout_s: float = Field(20.0, gt=0.0, description="how long GetTask long-polls are held")
    idle_poll_s: float | None = Field(None, gt=0.0, description=(
        "idle polling, for large fleets: a GetTask with no task for its client is answered at once with WAIT and a "
        "come-back time of about this many seconds (x0.75-1.25), instead of being held; a client away holds no call "
        "(fedser's daemon: no connection) on the server, and a round starts up to ~1.25 x this later (its sampled "
        "clients hear their task when they come back); at most 0.4 x server.client_timeout_s; default: long-poll"))
    inline_model_max_bytes: int = Field(4 * 2**20 - 64 * 2**10, ge=0, le=6 * 2**20)
    """A global state up to this size travels inside the task (no FetchModel call per client and round), and an update
    up to this size in one SubmitSmallUpdate message, kept in memory until it is aggregated; larger ones stream (and
    updates are parked on disk); 0 always streams. The default (4 MiB - 64 KiB) leaves room for the Task around it within
    the 4 MiB receive limit most gRPC clients keep by default (grpc-js, grpc-java, grpc-go). At most 6 MiB."""
    inline_models_per_round_max_bytes: int = Field(128 * 2**20, ge=0)
    """Of a round's model, at most this many bytes in all travel inside tasks (each inline copy counted); the round's
    later tasks leave the model out and their clients fetch it (FetchModel), so that a large sample does not put
    sampled clients x model bytes in the server's send buffers at once. The default fits 100 clients of a 1.1 MB
    model; 0 never sends the model inline."""
    state_in_memory_max_bytes: int = Field(16 * 2**20, ge=0)
    """A global state up to this size, and its float64 running sums, are held in the server's memory (the fastest);
    a larger one lives in unnamed files in the state dir, of which the server maps in only the few MiB it works on, so
    that its resident memory holds no model-sized array (the page cache does); 0 always uses files."""
    update_norm_max: float | None = Field(None, gt=0.0, description=(
        "bound on the L2 norm of an update's model change (its delta.* tensors together); default: no bound"))
    update_norm_relative: float = Field(1000.0, ge=0.0, description=(
        # 10 refused honest updates: label-free clients' few-sample updates pull the median down ~20x below a
        # labeled client's; 1000 still refuses a 1e6-valued update by orders of magnitude
        "bound an update's delta.* norm to this many times the median norm of the recent accepted updates (until three "
        "are on record: times the global model's norm); 0: no relative bound"))
    update_norm_action: Literal["refuse", "clip"] = "refuse"
    """What happens to an update above update_norm_max or the relative bound: refused (counted as norm_bound), or
    scaled down to the bound."""
    seed: int = 0
    """Seed of client sampling and model initialisation; clients derive their evaluation splits from it."""

    @field_validator("update_norm_relative")
    @classmethod
    def _relative_bound_above_the_median(cls, value: float) -> float:
        if 0.0 < value < 1.0:
            raise ValueError("must be 0 (off) or at least 1: below 1 it refuses about half of the honest updates")
        return value

    @property
    def updates_needed(self) -> int:
        return self.min_updates if self.min_updates is not None else self.min_clients

    @property
    def clients_to_start(self) -> int:
        return max(self.min_clients, self.start_clients or 0)


class PrivacyConfig(_Section):
    """What the server may learn from the clients' updates: secure aggregation and differential privacy (docs/privacy.md)."""

    secure_aggregation: Literal["off", "secagg+"] = "off"
    """secagg+: the server learns only the sum of each round's updates (SecAgg+, Bell et al. 2020): clients clip,
    quantise and mask their updates; FedAvg weights and SCAFFOLD's dc.* are summed inside the masked vector."""
    secagg_neighbours: int | None = Field(None, ge=2)
    """SecAgg+: how many neighbours each client shares its secrets with (even; a random regular graph per round);
    default: every other sampled client (Bonawitz et al. 2017)."""
    secagg_threshold: float = Field(0.6, gt=0.5, le=1.0)
    """Share of a client's share holders (its neighbours and itself) needed to unmask; a round that loses more
    clients than that allows is retried, never unmasked."""
    secagg_clip_norm: float = Field(10.0, gt=0.0)
    """Clients clip their model change (delta.* together) to this L2 norm before quantising."""
    secagg_control_clip_norm: float = Field(100.0, gt=0.0)
    """Clients clip their control-variate change (dc.* together, SCAFFOLD) to this L2 norm before quantising."""
    secagg_max_weight: int = Field(10_000, ge=1, le=2**24)
    """Largest FedAvg weight (n_samples) one update carries; a client with more samples counts this many."""
    secagg_stage_timeout_s: float = Field(60.0, gt=0.0)
    """Seconds the server waits for clients at each key, share and unmasking stage; whoever is late has dropped."""

    dp: Literal["off", "central", "distributed"] = "off"
    """Differential privacy (DP-FedAvg): off; central: the server clips each update to clip_norm (under secure aggregation the
    clients do) and adds N(0, (z*C)^2) to the round's sum;
    distributed: each client clips and adds N(0, (z*C)^2 / n) for n sampled clients (the mode that composes with
    secure aggregation). Under dp the mean is unweighted: every client's clipped update counts once."""
    clip_norm: float = Field(1.0, gt=0.0)
    """L2 bound C on one update's model change (its delta.* tensors together); the start value when adaptive."""
    adaptive_clip_quantile: float | None = Field(None, gt=0.0, lt=1.0)
    """Adapt C each round toward this quantile of the update norms (Andrew et al. 2021); default: C stays fixed.
    In-process engine only: the gRPC server refuses it (it cannot see the clients' norms)."""
    adaptive_clip_lr: float = Field(0.2, gt=0.0)
    """Geometric learning rate of the adaptive clip norm: C <- C * exp(-lr * (share clipped-below - quantile))."""
    noise_multiplier: float | None = Field(None, ge=0.0)
    """Noise multiplier z: the noise std on the sum is z * C. Give this or target_epsilon."""
    target_epsilon: float | None = Field(None, gt=0.0)
    """Choose z so that federation.rounds rounds spend exactly this epsilon (at delta); give this or noise_multiplier."""
    delta: float = Field(1e-5, gt=0.0, lt=1.0)
    """The delta of the reported (epsilon, delta) guarantee; keep it below 1 / number of clients."""
    epsilon_budget: float | None = Field(None, gt=0.0)
    """Stop the run cleanly before a round that would spend more than this epsilon; default: no budget."""

    @model_validator(mode="after")
    def _even_degree(self) -> PrivacyConfig:
        if self.secagg_neighbours is not None and self.secagg_neighbours % 2:
            raise ValueError(f"secagg_neighbours must be even, got {self.secagg_neighbours}")
        return self

    @property
    def secure(self) -> bool:
        return self.secure_aggregation != "off"

    @model_validator(mode="after")
    def _one_noise_source(self) -> PrivacyConfig:
        if self.dp != "off" and (self.noise_multiplier is None) == (self.target_epsilon is None):
            raise ValueError(f"dp = '{self.dp}' needs exactly one of noise_multiplier and target_epsilon")
        return self

    @property
    def dp_enabled(self) -> bool:
        return self.dp != "off"


class ServerConfig(_Section):
    """The server's sessions: when a silent client counts as gone (the server's own settings, not the training's)."""

    client_timeout_s: float = Field(120.0, gt=0.0)
    """Seconds of silence after which a client counts as gone: its session ends and it must join again."""
    heartbeat_interval_s: float | None = Field(None, gt=0.0, description=(
        "seconds between a client's heartbeats, told to it at join; default min(10, client_timeout_s / 4), "
        "so that a few fit in one timeout; longer for large fleets"))

    @property
    def heartbeat_s(self) -> float:
        return self.heartbeat_interval_s or min(10.0, self.client_timeout_s / 4)


class AdmissionConfig(_Section):
    """How many calls of each long-lived kind the server holds at once (docs/operations.md: large fleets)."""

    max_workers: int = Field(256, ge=4)
    """Threads for the blocking handlers (Join, Leave, SubmitEvaluation, the bulk streams)."""
    uploads: int = Field(2, ge=1)
    """Updates received, checked and aggregated at once: peak memory does not grow with the number of clients. An
    upload that finds them all taken is refused at once with a time to come back (`upload_slots_busy`), never parked."""
    parked_polls: int | None = Field(None, ge=0, description=(
        "GetTask long-polls parked at once (a coroutine each, no thread); beyond them a poll is answered at once "
        "with a jittered retry_after_s; default 50,000"))
    max_calls: int = Field(65_536, ge=1)
    """Calls in progress at once, parked polls included; beyond them gRPC refuses with RESOURCE_EXHAUSTED."""
    header_timeout_s: float = Field(10.0, gt=0.0)
    """Seconds an update stream has to send its header (which authenticates it) before it is cut off; until then it
    holds no worker thread."""
    unauthenticated_streams: int = Field(1024, ge=1)
    """Update streams waiting for their header at once; beyond them a stream is refused at once (a coroutine each)."""

    @property
    def parked_polls_cap(self) -> int:
        return self.parked_polls if self.parked_polls is not None else 50_000


class RunConfig(_Section):
    federation: FederationConfig = Field(default_factory=FederationConfig)
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    semi: SemiConfig = Field(default_factory=SemiConfig)
    labels: LabelsConfig = Field(default_factory=LabelsConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    admission: AdmissionConfig = Field(default_factory=AdmissionConfig)

    @model_validator(mode="after")
    def _idle_clients_keep_their_sessions(self) -> RunConfig:
        idle_s, timeout_s = self.federation.idle_poll_s, self.server.client_timeout_s
        if idle_s is not None and idle_s * IDLE_POLL_JITTER[1] * 2 > timeout_s:
            raise ValueError(f"federation.idle_poll_s {idle_s:g} s is too long for server.client_timeout_s {timeout_s:g} s: "
                             f"an idle client's come-back time (up to {IDLE_POLL_JITTER[1]:g} x idle_poll_s) must fit "
                             f"twice in the client timeout, or sessions expire; at most {timeout_s * 0.4:g} s")
        return self

    @model_validator(mode="after")
    def _dp_needs_fedavg(self) -> RunConfig:
        if self.privacy.dp_enabled and self.federation.algorithm != "fedavg":
            raise ValueError("privacy.dp needs federation.algorithm = 'fedavg': SCAFFOLD's control-variate changes "
                             "would be a second release per round that DP-FedAvg neither clips nor noises")
        return self

    @property
    def num_classes(self) -> int:
        return self.labels.num_classes

    @property
    def feature_dim(self) -> int:
        return FEATURE_DIMS[self.features.name]

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        return cls.model_validate_json(text)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def to_toml(config: RunConfig) -> str:
    """The configuration as a TOML document that `load_run_config` reads back unchanged."""
    lines: list[str] = []
    for section, values in config.model_dump(mode="json").items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in values.items() if value is not None)
        lines.append("")
    return "\n".join(lines)


def format_validation_error(error: ValidationError, source: str = "config") -> str:
    parts = []
    for item in error.errors():
        field = ".".join(str(p) for p in item["loc"]) or "<root>"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown field"
        parts.append(f"'{field}': {message}")
    return f"invalid {source}: " + "; ".join(parts)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for key in parents:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"invalid config: '{dotted}': '{key}' is not a section")
        node = child
    node[leaf] = value


def load_run_config(path: Path | None = None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read TOML (if given), apply dotted-key overrides (``federation.rounds``), validate."""
    tree: dict[str, Any] = {}
    source = "config"
    if path is not None:
        source = f"config {path}"
        try:
            tree = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"malformed TOML in {path}: {exc}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from None
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(tree, dotted, value)
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None
