from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TaskKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_KIND_UNSPECIFIED: _ClassVar[TaskKind]
    TASK_KIND_WAIT: _ClassVar[TaskKind]
    TASK_KIND_TRAIN: _ClassVar[TaskKind]
    TASK_KIND_EVALUATE: _ClassVar[TaskKind]
    TASK_KIND_SHUTDOWN: _ClassVar[TaskKind]

class Checksum(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHECKSUM_SHA256: _ClassVar[Checksum]
    CHECKSUM_XXH3_128: _ClassVar[Checksum]
TASK_KIND_UNSPECIFIED: TaskKind
TASK_KIND_WAIT: TaskKind
TASK_KIND_TRAIN: TaskKind
TASK_KIND_EVALUATE: TaskKind
TASK_KIND_SHUTDOWN: TaskKind
CHECKSUM_SHA256: Checksum
CHECKSUM_XXH3_128: Checksum

class DescribeRequest(_message.Message):
    __slots__ = ("protocol_version",)
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    def __init__(self, protocol_version: _Optional[int] = ...) -> None: ...

class ServerInfo(_message.Message):
    __slots__ = ("protocol_version", "feature_name", "feature_dim", "num_classes", "class_names", "total_rounds", "algorithm", "update_checksums", "inline_model_max_bytes", "enrolment_tokens", "header_timeout_s", "secure_aggregation")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    FEATURE_NAME_FIELD_NUMBER: _ClassVar[int]
    FEATURE_DIM_FIELD_NUMBER: _ClassVar[int]
    NUM_CLASSES_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAMES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    UPDATE_CHECKSUMS_FIELD_NUMBER: _ClassVar[int]
    INLINE_MODEL_MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    ENROLMENT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    HEADER_TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    SECURE_AGGREGATION_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    feature_name: str
    feature_dim: int
    num_classes: int
    class_names: _containers.RepeatedScalarFieldContainer[str]
    total_rounds: int
    algorithm: str
    update_checksums: _containers.RepeatedScalarFieldContainer[Checksum]
    inline_model_max_bytes: int
    enrolment_tokens: bool
    header_timeout_s: float
    secure_aggregation: str
    def __init__(self, protocol_version: _Optional[int] = ..., feature_name: _Optional[str] = ..., feature_dim: _Optional[int] = ..., num_classes: _Optional[int] = ..., class_names: _Optional[_Iterable[str]] = ..., total_rounds: _Optional[int] = ..., algorithm: _Optional[str] = ..., update_checksums: _Optional[_Iterable[_Union[Checksum, str]]] = ..., inline_model_max_bytes: _Optional[int] = ..., enrolment_tokens: _Optional[bool] = ..., header_timeout_s: _Optional[float] = ..., secure_aggregation: _Optional[str] = ...) -> None: ...

class Session(_message.Message):
    __slots__ = ("client_id", "session_token")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_TOKEN_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    session_token: str
    def __init__(self, client_id: _Optional[str] = ..., session_token: _Optional[str] = ...) -> None: ...

class JoinRequest(_message.Message):
    __slots__ = ("protocol_version", "token", "name", "feature_name", "feature_dim", "label_counts", "n_unlabeled", "n_eval", "client_id")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    FEATURE_NAME_FIELD_NUMBER: _ClassVar[int]
    FEATURE_DIM_FIELD_NUMBER: _ClassVar[int]
    LABEL_COUNTS_FIELD_NUMBER: _ClassVar[int]
    N_UNLABELED_FIELD_NUMBER: _ClassVar[int]
    N_EVAL_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    token: str
    name: str
    feature_name: str
    feature_dim: int
    label_counts: _containers.RepeatedScalarFieldContainer[int]
    n_unlabeled: int
    n_eval: int
    client_id: str
    def __init__(self, protocol_version: _Optional[int] = ..., token: _Optional[str] = ..., name: _Optional[str] = ..., feature_name: _Optional[str] = ..., feature_dim: _Optional[int] = ..., label_counts: _Optional[_Iterable[int]] = ..., n_unlabeled: _Optional[int] = ..., n_eval: _Optional[int] = ..., client_id: _Optional[str] = ...) -> None: ...

class RunSettings(_message.Message):
    __slots__ = ("feature_name", "feature_dim", "num_classes", "total_rounds", "run_config_json")
    FEATURE_NAME_FIELD_NUMBER: _ClassVar[int]
    FEATURE_DIM_FIELD_NUMBER: _ClassVar[int]
    NUM_CLASSES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    RUN_CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    feature_name: str
    feature_dim: int
    num_classes: int
    total_rounds: int
    run_config_json: str
    def __init__(self, feature_name: _Optional[str] = ..., feature_dim: _Optional[int] = ..., num_classes: _Optional[int] = ..., total_rounds: _Optional[int] = ..., run_config_json: _Optional[str] = ...) -> None: ...

class JoinReply(_message.Message):
    __slots__ = ("session", "settings", "heartbeat_interval_s")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    session: Session
    settings: RunSettings
    heartbeat_interval_s: float
    def __init__(self, session: _Optional[_Union[Session, _Mapping]] = ..., settings: _Optional[_Union[RunSettings, _Mapping]] = ..., heartbeat_interval_s: _Optional[float] = ...) -> None: ...

class GetTaskRequest(_message.Message):
    __slots__ = ("protocol_version", "session", "checksums")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    CHECKSUMS_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    session: Session
    checksums: _containers.RepeatedScalarFieldContainer[Checksum]
    def __init__(self, protocol_version: _Optional[int] = ..., session: _Optional[_Union[Session, _Mapping]] = ..., checksums: _Optional[_Iterable[_Union[Checksum, str]]] = ...) -> None: ...

class TrainSpec(_message.Message):
    __slots__ = ("lr", "local_epochs", "pseudo_label_threshold", "participation", "dp_clip_norm", "dp_noise_std")
    LR_FIELD_NUMBER: _ClassVar[int]
    LOCAL_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    PSEUDO_LABEL_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    PARTICIPATION_FIELD_NUMBER: _ClassVar[int]
    DP_CLIP_NORM_FIELD_NUMBER: _ClassVar[int]
    DP_NOISE_STD_FIELD_NUMBER: _ClassVar[int]
    lr: float
    local_epochs: int
    pseudo_label_threshold: float
    participation: int
    dp_clip_norm: float
    dp_noise_std: float
    def __init__(self, lr: _Optional[float] = ..., local_epochs: _Optional[int] = ..., pseudo_label_threshold: _Optional[float] = ..., participation: _Optional[int] = ..., dp_clip_norm: _Optional[float] = ..., dp_noise_std: _Optional[float] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("kind", "round", "task_id", "train", "deadline_unix_s", "retry_after_s", "model")
    KIND_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    TRAIN_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_UNIX_S_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_S_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    kind: TaskKind
    round: int
    task_id: str
    train: TrainSpec
    deadline_unix_s: float
    retry_after_s: float
    model: InlineBlob
    def __init__(self, kind: _Optional[_Union[TaskKind, str]] = ..., round: _Optional[int] = ..., task_id: _Optional[str] = ..., train: _Optional[_Union[TrainSpec, _Mapping]] = ..., deadline_unix_s: _Optional[float] = ..., retry_after_s: _Optional[float] = ..., model: _Optional[_Union[InlineBlob, _Mapping]] = ...) -> None: ...

class InlineBlob(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: BlobHeader
    data: bytes
    def __init__(self, header: _Optional[_Union[BlobHeader, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class FetchModelRequest(_message.Message):
    __slots__ = ("protocol_version", "session", "round", "task_id", "checksums")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    CHECKSUMS_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    session: Session
    round: int
    task_id: str
    checksums: _containers.RepeatedScalarFieldContainer[Checksum]
    def __init__(self, protocol_version: _Optional[int] = ..., session: _Optional[_Union[Session, _Mapping]] = ..., round: _Optional[int] = ..., task_id: _Optional[str] = ..., checksums: _Optional[_Iterable[_Union[Checksum, str]]] = ...) -> None: ...

class BlobHeader(_message.Message):
    __slots__ = ("total_len", "sha256", "xxh3_128", "checksum")
    TOTAL_LEN_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    XXH3_128_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    total_len: int
    sha256: bytes
    xxh3_128: bytes
    checksum: Checksum
    def __init__(self, total_len: _Optional[int] = ..., sha256: _Optional[bytes] = ..., xxh3_128: _Optional[bytes] = ..., checksum: _Optional[_Union[Checksum, str]] = ...) -> None: ...

class BlobTrailer(_message.Message):
    __slots__ = ("sha256", "xxh3_128")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    XXH3_128_FIELD_NUMBER: _ClassVar[int]
    sha256: bytes
    xxh3_128: bytes
    def __init__(self, sha256: _Optional[bytes] = ..., xxh3_128: _Optional[bytes] = ...) -> None: ...

class ModelChunk(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: BlobHeader
    data: bytes
    def __init__(self, header: _Optional[_Union[BlobHeader, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class TrainMetrics(_message.Message):
    __slots__ = ("loss", "n_labeled", "n_pseudo", "local_steps", "pseudo_taken_per_class", "pseudo_correct_per_class", "pseudo_with_truth", "train_seconds", "pseudo_candidates", "pseudo_pass_tau", "pseudo_pass_kappa")
    LOSS_FIELD_NUMBER: _ClassVar[int]
    N_LABELED_FIELD_NUMBER: _ClassVar[int]
    N_PSEUDO_FIELD_NUMBER: _ClassVar[int]
    LOCAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    PSEUDO_TAKEN_PER_CLASS_FIELD_NUMBER: _ClassVar[int]
    PSEUDO_CORRECT_PER_CLASS_FIELD_NUMBER: _ClassVar[int]
    PSEUDO_WITH_TRUTH_FIELD_NUMBER: _ClassVar[int]
    TRAIN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PSEUDO_CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    PSEUDO_PASS_TAU_FIELD_NUMBER: _ClassVar[int]
    PSEUDO_PASS_KAPPA_FIELD_NUMBER: _ClassVar[int]
    loss: float
    n_labeled: int
    n_pseudo: int
    local_steps: int
    pseudo_taken_per_class: _containers.RepeatedScalarFieldContainer[int]
    pseudo_correct_per_class: _containers.RepeatedScalarFieldContainer[int]
    pseudo_with_truth: int
    train_seconds: float
    pseudo_candidates: int
    pseudo_pass_tau: int
    pseudo_pass_kappa: int
    def __init__(self, loss: _Optional[float] = ..., n_labeled: _Optional[int] = ..., n_pseudo: _Optional[int] = ..., local_steps: _Optional[int] = ..., pseudo_taken_per_class: _Optional[_Iterable[int]] = ..., pseudo_correct_per_class: _Optional[_Iterable[int]] = ..., pseudo_with_truth: _Optional[int] = ..., train_seconds: _Optional[float] = ..., pseudo_candidates: _Optional[int] = ..., pseudo_pass_tau: _Optional[int] = ..., pseudo_pass_kappa: _Optional[int] = ...) -> None: ...

class UpdateHeader(_message.Message):
    __slots__ = ("protocol_version", "session", "round", "task_id", "n_samples", "metrics", "blob")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    N_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    BLOB_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    session: Session
    round: int
    task_id: str
    n_samples: int
    metrics: TrainMetrics
    blob: BlobHeader
    def __init__(self, protocol_version: _Optional[int] = ..., session: _Optional[_Union[Session, _Mapping]] = ..., round: _Optional[int] = ..., task_id: _Optional[str] = ..., n_samples: _Optional[int] = ..., metrics: _Optional[_Union[TrainMetrics, _Mapping]] = ..., blob: _Optional[_Union[BlobHeader, _Mapping]] = ...) -> None: ...

class UpdateChunk(_message.Message):
    __slots__ = ("header", "data", "trailer")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    TRAILER_FIELD_NUMBER: _ClassVar[int]
    header: UpdateHeader
    data: bytes
    trailer: BlobTrailer
    def __init__(self, header: _Optional[_Union[UpdateHeader, _Mapping]] = ..., data: _Optional[bytes] = ..., trailer: _Optional[_Union[BlobTrailer, _Mapping]] = ...) -> None: ...

class SmallUpdate(_message.Message):
    __slots__ = ("header", "data", "trailer")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    TRAILER_FIELD_NUMBER: _ClassVar[int]
    header: UpdateHeader
    data: bytes
    trailer: BlobTrailer
    def __init__(self, header: _Optional[_Union[UpdateHeader, _Mapping]] = ..., data: _Optional[bytes] = ..., trailer: _Optional[_Union[BlobTrailer, _Mapping]] = ...) -> None: ...

class UpdateAck(_message.Message):
    __slots__ = ("accepted", "message")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    message: str
    def __init__(self, accepted: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...

class EvaluationReport(_message.Message):
    __slots__ = ("protocol_version", "session", "round", "task_id", "num_classes", "confusion", "loss")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    NUM_CLASSES_FIELD_NUMBER: _ClassVar[int]
    CONFUSION_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    session: Session
    round: int
    task_id: str
    num_classes: int
    confusion: _containers.RepeatedScalarFieldContainer[int]
    loss: float
    def __init__(self, protocol_version: _Optional[int] = ..., session: _Optional[_Union[Session, _Mapping]] = ..., round: _Optional[int] = ..., task_id: _Optional[str] = ..., num_classes: _Optional[int] = ..., confusion: _Optional[_Iterable[int]] = ..., loss: _Optional[float] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("message",)
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    message: str
    def __init__(self, message: _Optional[str] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("protocol_version", "session")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    session: Session
    def __init__(self, protocol_version: _Optional[int] = ..., session: _Optional[_Union[Session, _Mapping]] = ...) -> None: ...

class HeartbeatReply(_message.Message):
    __slots__ = ("round", "heartbeat_interval_s")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    round: int
    heartbeat_interval_s: float
    def __init__(self, round: _Optional[int] = ..., heartbeat_interval_s: _Optional[float] = ...) -> None: ...

class LeaveRequest(_message.Message):
    __slots__ = ("protocol_version", "session", "reason")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    session: Session
    reason: str
    def __init__(self, protocol_version: _Optional[int] = ..., session: _Optional[_Union[Session, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

class SecAggAdvertiseRequest(_message.Message):
    __slots__ = ("protocol_version", "session", "round", "task_id", "share_key", "mask_key")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    SHARE_KEY_FIELD_NUMBER: _ClassVar[int]
    MASK_KEY_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    session: Session
    round: int
    task_id: str
    share_key: bytes
    mask_key: bytes
    def __init__(self, protocol_version: _Optional[int] = ..., session: _Optional[_Union[Session, _Mapping]] = ..., round: _Optional[int] = ..., task_id: _Optional[str] = ..., share_key: _Optional[bytes] = ..., mask_key: _Optional[bytes] = ...) -> None: ...

class SecAggPeerKey(_message.Message):
    __slots__ = ("node", "share_key", "mask_key")
    NODE_FIELD_NUMBER: _ClassVar[int]
    SHARE_KEY_FIELD_NUMBER: _ClassVar[int]
    MASK_KEY_FIELD_NUMBER: _ClassVar[int]
    node: int
    share_key: bytes
    mask_key: bytes
    def __init__(self, node: _Optional[int] = ..., share_key: _Optional[bytes] = ..., mask_key: _Optional[bytes] = ...) -> None: ...

class SecAggPeers(_message.Message):
    __slots__ = ("node", "threshold", "context", "n_clients", "vector_length", "peers")
    NODE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    N_CLIENTS_FIELD_NUMBER: _ClassVar[int]
    VECTOR_LENGTH_FIELD_NUMBER: _ClassVar[int]
    PEERS_FIELD_NUMBER: _ClassVar[int]
    node: int
    threshold: int
    context: bytes
    n_clients: int
    vector_length: int
    peers: _containers.RepeatedCompositeFieldContainer[SecAggPeerKey]
    def __init__(self, node: _Optional[int] = ..., threshold: _Optional[int] = ..., context: _Optional[bytes] = ..., n_clients: _Optional[int] = ..., vector_length: _Optional[int] = ..., peers: _Optional[_Iterable[_Union[SecAggPeerKey, _Mapping]]] = ...) -> None: ...

class SecAggShare(_message.Message):
    __slots__ = ("sender", "recipient", "ciphertext")
    SENDER_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    sender: int
    recipient: int
    ciphertext: bytes
    def __init__(self, sender: _Optional[int] = ..., recipient: _Optional[int] = ..., ciphertext: _Optional[bytes] = ...) -> None: ...

class SecAggShareRequest(_message.Message):
    __slots__ = ("protocol_version", "session", "round", "task_id", "shares")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    SHARES_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    session: Session
    round: int
    task_id: str
    shares: _containers.RepeatedCompositeFieldContainer[SecAggShare]
    def __init__(self, protocol_version: _Optional[int] = ..., session: _Optional[_Union[Session, _Mapping]] = ..., round: _Optional[int] = ..., task_id: _Optional[str] = ..., shares: _Optional[_Iterable[_Union[SecAggShare, _Mapping]]] = ...) -> None: ...

class SecAggSharesForYou(_message.Message):
    __slots__ = ("shares",)
    SHARES_FIELD_NUMBER: _ClassVar[int]
    shares: _containers.RepeatedCompositeFieldContainer[SecAggShare]
    def __init__(self, shares: _Optional[_Iterable[_Union[SecAggShare, _Mapping]]] = ...) -> None: ...

class SecAggMaskRequest(_message.Message):
    __slots__ = ("protocol_version", "session", "round", "task_id", "masked")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    MASKED_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    session: Session
    round: int
    task_id: str
    masked: bytes
    def __init__(self, protocol_version: _Optional[int] = ..., session: _Optional[_Union[Session, _Mapping]] = ..., round: _Optional[int] = ..., task_id: _Optional[str] = ..., masked: _Optional[bytes] = ...) -> None: ...

class SecAggUnmaskTask(_message.Message):
    __slots__ = ("seed_of", "key_of")
    SEED_OF_FIELD_NUMBER: _ClassVar[int]
    KEY_OF_FIELD_NUMBER: _ClassVar[int]
    seed_of: _containers.RepeatedScalarFieldContainer[int]
    key_of: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, seed_of: _Optional[_Iterable[int]] = ..., key_of: _Optional[_Iterable[int]] = ...) -> None: ...

class SecAggNodeShare(_message.Message):
    __slots__ = ("node", "share")
    NODE_FIELD_NUMBER: _ClassVar[int]
    SHARE_FIELD_NUMBER: _ClassVar[int]
    node: int
    share: bytes
    def __init__(self, node: _Optional[int] = ..., share: _Optional[bytes] = ...) -> None: ...

class SecAggUnmaskShares(_message.Message):
    __slots__ = ("protocol_version", "session", "round", "task_id", "seed_shares", "key_shares")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    SEED_SHARES_FIELD_NUMBER: _ClassVar[int]
    KEY_SHARES_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    session: Session
    round: int
    task_id: str
    seed_shares: _containers.RepeatedCompositeFieldContainer[SecAggNodeShare]
    key_shares: _containers.RepeatedCompositeFieldContainer[SecAggNodeShare]
    def __init__(self, protocol_version: _Optional[int] = ..., session: _Optional[_Union[Session, _Mapping]] = ..., round: _Optional[int] = ..., task_id: _Optional[str] = ..., seed_shares: _Optional[_Iterable[_Union[SecAggNodeShare, _Mapping]]] = ..., key_shares: _Optional[_Iterable[_Union[SecAggNodeShare, _Mapping]]] = ...) -> None: ...
