"""LocalTrainer: one client's local update and evaluation (DESIGN §5).

`train(global_state, task, local_state) -> (update, new_local_state, report)` runs one
participation in four named steps: the objective's `prepare` with the received model (MvPL
grows its pool there), the SCAFFOLD correction c - c_i, K local steps of the objective, then
the update y - theta and c_i+. The objectives (supervised, MvPL, FixMatch) live in
`fedser_client.core.objectives` and what a client keeps in `fedser_client.core.state`; this
module drives them.
"""

from __future__ import annotations

import time
import warnings
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from fedser_client.core.data import UNLABELED, ClientData
from fedser_client.core.losses import class_balanced_weights
from fedser_client.core.objectives import ClientTensors, Objective, StepOutcome, make_objective
from fedser_client.core.state import LocalState
from fedser_shared.config import RunConfig
from fedser_shared.metrics import confusion_matrix
from fedser_shared.model import EmotionMLP
from fedser_shared.tensor_names import CONTROL as CONTROL_PREFIX
from fedser_shared.tensor_names import DELTA, DELTA_CONTROL
from fedser_shared.tensor_names import WEIGHT as WEIGHT_PREFIX
from fedser_shared.train_metrics import TrainMetrics


def _tensor_to_read(array: np.ndarray) -> torch.Tensor:
    """A tensor over `array` (no copy) that is only read: a received model and a stored c_i are
    read-only arrays, which torch takes with a warning about writes that nothing here makes."""
    array = np.asarray(array)
    if array.flags.writeable:
        return torch.from_numpy(array)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The given NumPy array is not writable", UserWarning)
        return torch.from_numpy(array)


@dataclass(frozen=True)
class TrainTask:
    round: int
    lr: float
    local_epochs: int = 1
    pseudo_threshold: float = 0.5


@dataclass(frozen=True)
class TrainReport:
    """One participation's report: its `metrics` (what the server hears, `TrainMetrics`), and the
    unlabeled rows it counted as taken with the label each got, which stay on this client (the
    accuracy benchmarks read them)."""

    metrics: TrainMetrics
    pseudo_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    pseudo_labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


@dataclass(frozen=True)
class ScaffoldTerms:
    server_c: list[torch.Tensor]
    client_c: list[torch.Tensor]

    @property
    def correction(self) -> list[torch.Tensor]:
        return [sc - cc for sc, cc in zip(self.server_c, self.client_c)]


@dataclass(frozen=True)
class LocalRun:
    steps: int
    loss: float
    trained_unlabeled: np.ndarray   # distinct unlabeled rows that carried a (pseudo-)label in some step
    assigned_label: np.ndarray      # the label each of those rows last trained with
    candidates: int
    pass_tau: int


def stable_seed(*parts: int | str) -> int:
    """A 63-bit seed from ints and strings, equal in every process."""
    ints = [p if isinstance(p, int) else zlib.crc32(p.encode()) for p in parts]
    return int(np.random.SeedSequence(ints).generate_state(2, np.uint64)[0] >> np.uint64(1))


class LocalTrainer:
    def __init__(self, config: RunConfig, data: ClientData, client_seed: int, device: str = "cpu") -> None:
        self.config = config
        self.data = data
        self.client_seed = client_seed
        self.device = torch.device(device)
        self.num_classes = config.num_classes
        self._x_train = torch.from_numpy(np.ascontiguousarray(data.x_train, dtype=np.float32)).to(self.device)
        self._x_eval = torch.from_numpy(np.ascontiguousarray(data.x_eval, dtype=np.float32)).to(self.device)
        self._y_train = torch.from_numpy(data.y_train.astype(np.int64)).to(self.device)
        self.model = EmotionMLP(data.feature_dim, self.num_classes, config.model.hidden, config.model.dropout).to(self.device)
        self._parameters = list(self.model.named_parameters())  # walked once: every participation reads them 3 times
        self._n_labeled = int(len(data.labeled_index))
        self._y_eval = torch.from_numpy(data.y_eval.astype(np.int64)).to(self.device)
        counts = data.label_counts(self.num_classes)
        weights = class_balanced_weights(counts, config.train.class_balance_beta)
        styles = None if data.style_bank is None else torch.from_numpy(data.style_bank).to(self.device)
        self._tensors = ClientTensors(
            self._x_train, self._y_train, torch.from_numpy(data.labeled_index.astype(np.int64)).to(self.device),
            torch.from_numpy(data.unlabeled_index.astype(np.int64)).to(self.device),
            torch.tensor(weights, dtype=torch.float32, device=self.device), counts, styles)

    @property
    def n_labeled(self) -> int:
        return self._n_labeled

    # -- model I/O -------------------------------------------------------------------
    def _load_global(self, state: Mapping[str, np.ndarray]) -> None:
        with torch.no_grad():
            for name, p in self._parameters:
                p.copy_(_tensor_to_read(state[WEIGHT_PREFIX + name]).to(self.device))

    def _generator(self, round_index: int, purpose: str) -> torch.Generator:
        gen = torch.Generator(device=self.device)
        gen.manual_seed(stable_seed(self.config.federation.seed, self.client_seed, round_index, purpose))
        return gen

    def _optimizer_step(self, params: list[torch.Tensor], lr: float) -> Callable[[tuple[torch.Tensor, ...]], None]:
        """One optimizer step on the (already corrected) gradients; fresh state per participation.

        SGD is written out (p <- p - lr g, one foreach call: per tensor the same `add_`): torch.optim's
        per-step machinery costs more than this model's whole backward pass on a small client batch."""
        train = self.config.train
        if train.optimizer == "adam":
            adam = torch.optim.Adam(params, lr=lr, betas=train.adam_betas, eps=train.adam_eps,
                                    weight_decay=train.adam_weight_decay)

            def adam_step(grads: tuple[torch.Tensor, ...]) -> None:
                for p, grad in zip(params, grads):
                    p.grad = grad
                adam.step()

            return adam_step

        def sgd(grads: tuple[torch.Tensor, ...]) -> None:
            with torch.no_grad():
                torch._foreach_add_(params, grads, alpha=-lr)

        return sgd

    # -- step 2: control-variate correction ------------------------------------------------
    def _scaffold_terms(self, global_state: Mapping[str, np.ndarray], state: LocalState) -> ScaffoldTerms | None:
        """c and c_i as tensors when the global state carries a control variate (SCAFFOLD), else None."""
        names = [name for name, _ in self._parameters]
        if CONTROL_PREFIX + names[0] not in global_state:
            return None
        server_c = [_tensor_to_read(global_state[CONTROL_PREFIX + n]).to(self.device) for n in names]
        client_c = [_tensor_to_read(state.control[CONTROL_PREFIX + n]).to(self.device)
                    if CONTROL_PREFIX + n in state.control else torch.zeros_like(sc) for n, sc in zip(names, server_c)]
        return ScaffoldTerms(server_c, client_c)

    # -- step 3: local steps ---------------------------------------------------------------
    def _local_steps(self, objective: Objective, task: TrainTask, correction: list[torch.Tensor] | None) -> LocalRun:
        """K optimizer steps, g <- g + c - c_i before each; the loss is summed on the device and read once."""
        params: list[torch.Tensor] = [p for _, p in self._parameters]
        step = self._optimizer_step(params, task.lr)
        gen = self._generator(task.round, "train")
        self.model.train()
        loss_sum = torch.zeros((), device=self.device)
        steps, outcomes = 0, []
        with torch.no_grad():  # the step's gradient is written out (StepLoss), no autograd graph is built
            for _ in range(task.local_epochs):
                for batch in objective.batches(gen):
                    outcome: StepOutcome = objective.loss(self.model, batch, gen)
                    grads = outcome.loss.gradients(self.model)
                    if correction is not None:
                        torch._foreach_add_(grads, correction)
                    step(grads)
                    steps += 1
                    loss_sum += outcome.loss.value
                    outcomes.append(outcome)
        rows, labels, candidates, passed = objective.summarise(outcomes)
        return LocalRun(steps, float(loss_sum) / max(steps, 1), rows, labels, candidates, passed)

    # -- step 4: update and c_i+ -------------------------------------------------------------
    def _update_and_control(self, global_state: Mapping[str, np.ndarray], scaffold: ScaffoldTerms | None,
                            steps: int, lr: float, control: dict[str, np.ndarray], empty: bool
                            ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Delta theta_i = y - theta and, under SCAFFOLD, c_i+ = c_i - c + (theta - y) / (K lr), Delta c_i = c_i+ - c_i.
        An empty participation (nothing trained on) sends zeros and keeps c_i: the server adds nothing of it."""
        update: dict[str, np.ndarray] = {}
        new_control = dict(control)
        for index, (name, p) in enumerate(self._parameters):
            theta = np.asarray(global_state[WEIGHT_PREFIX + name], dtype=np.float32)
            delta = np.zeros_like(theta) if empty else p.detach().cpu().numpy() - theta  # float32 - float32
            update[DELTA + name] = delta
            if scaffold is None:
                continue
            c_i = scaffold.client_c[index].cpu().numpy().astype(np.float32, copy=False)
            if empty or not steps:
                c_plus = c_i.copy()  # c_i may share memory with the state it came from
            else:
                c_plus = c_i - scaffold.server_c[index].cpu().numpy() - delta / (steps * lr)
            update[DELTA_CONTROL + name] = (c_plus - c_i).astype(np.float32, copy=False)
            new_control[CONTROL_PREFIX + name] = c_plus.astype(np.float32, copy=False)
        return update, new_control

    # -- one participation -------------------------------------------------------------
    def train(
        self, global_state: Mapping[str, np.ndarray], task: TrainTask, local_state: LocalState
    ) -> tuple[dict[str, np.ndarray], LocalState, TrainReport]:
        started = time.perf_counter()
        self._load_global(global_state)
        objective = make_objective(self.config, self._tensors, task.pseudo_threshold)
        prepared = objective.prepare(self.model, local_state, self._generator(task.round, "mvpl"))
        local_state = prepared.state
        scaffold = self._scaffold_terms(global_state, local_state)
        run = self._local_steps(objective, task, scaffold.correction if scaffold else None)
        n_samples = self.n_labeled + len(run.trained_unlabeled)
        update, control = self._update_and_control(global_state, scaffold, run.steps, task.lr, local_state.control,
                                                   empty=n_samples == 0)
        new_state = replace(local_state, control=control, participations=local_state.participations + 1)
        taken_rows, taken_labels = (prepared.taken_rows, prepared.taken_labels) if objective.keeps_pool else (
            run.trained_unlabeled, run.assigned_label)
        truth = self.data.hidden_labels[taken_rows]
        with_truth = truth != UNLABELED
        metrics = TrainMetrics(
            n_samples=n_samples,  # the FedAvg weight: labeled rows plus the unlabeled rows trained on; 0 = nothing to add
            loss=run.loss,
            n_labeled=self.n_labeled,
            n_pseudo=len(run.trained_unlabeled),
            local_steps=run.steps,
            pseudo_taken_per_class=tuple(np.bincount(taken_labels, minlength=self.num_classes).tolist()),
            pseudo_correct_per_class=tuple(np.bincount(taken_labels[with_truth & (truth == taken_labels)],
                                                       minlength=self.num_classes).tolist()),
            pseudo_with_truth=int(with_truth.sum()),
            train_seconds=time.perf_counter() - started,
            pseudo_candidates=prepared.candidates + run.candidates,
            pseudo_pass_tau=prepared.pass_tau + run.pass_tau,
            pseudo_pass_kappa=prepared.pass_kappa,
        )
        report = TrainReport(metrics, pseudo_rows=taken_rows, pseudo_labels=taken_labels)
        return update, new_state, report

    def evaluate(self, global_state: Mapping[str, np.ndarray]) -> tuple[np.ndarray, float]:
        """Confusion matrix (rows true) and mean CE loss on the local evaluation split."""
        self._load_global(global_state)
        self.model.eval()
        if len(self.data.y_eval) == 0:
            return np.zeros((self.num_classes, self.num_classes), np.int64), float("nan")
        with torch.no_grad():
            logits = self.model(self._x_eval)
            loss = float(torch.nn.functional.cross_entropy(logits, self._y_eval))
            predicted = logits.argmax(dim=1).cpu().numpy()
        return confusion_matrix(self.data.y_eval, predicted, self.num_classes), loss
