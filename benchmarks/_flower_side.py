"""The Flower half of benchmarks/vs_flower.py; runs inside the Flower virtual environment.

Flower's gRPC transport (`start_server` / `start_client`, grpc-bidi streaming; deprecated since
1.13 but still shipped in 1.42) with FedAvg and a client whose local work is trivial: it returns
the weights it received, as fedser's benchmark client returns a zero update.

    python _flower_side.py server ADDRESS ROUNDS N_CLIENTS HIDDEN_1,HIDDEN_2 FEATURE_DIM CLASSES OUT_JSON
    python _flower_side.py clients ADDRESS N_THREADS
"""

from __future__ import annotations

import json
import sys
import threading
import time
import warnings

import numpy as np

warnings.filterwarnings("ignore")


def mlp_weights(feature_dim: int, hidden: list[int], classes: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    sizes = [feature_dim, *hidden, classes]
    weights = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        weights += [rng.standard_normal((fan_out, fan_in), dtype=np.float32) * 0.01, np.zeros(fan_out, np.float32)]
    return weights


def serve(address: str, rounds: int, n_clients: int, hidden: list[int], feature_dim: int, classes: int, out: str) -> None:
    import flwr as fl
    from flwr.server.strategy import FedAvg

    ends: dict[int, float] = {}

    class TimedFedAvg(FedAvg):
        def aggregate_fit(self, server_round, results, failures):
            result = super().aggregate_fit(server_round, results, failures)
            ends[server_round] = time.perf_counter()  # the new global model exists
            return result

    strategy = TimedFedAvg(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=n_clients, min_evaluate_clients=0,
                           min_available_clients=n_clients,
                           initial_parameters=fl.common.ndarrays_to_parameters(mlp_weights(feature_dim, hidden, classes)))
    fl.server.start_server(server_address=address, config=fl.server.ServerConfig(num_rounds=rounds), strategy=strategy)
    with open(out, "w") as handle:
        json.dump({str(r): end for r, end in ends.items()}, handle)


def clients(address: str, n_threads: int) -> None:
    import flwr as fl

    class Trivial(fl.client.NumPyClient):
        def fit(self, parameters, config):
            return parameters, 10, {}

        def evaluate(self, parameters, config):
            return 0.0, 10, {}

    def one() -> None:
        fl.client.start_client(server_address=address, client=Trivial().to_client(), insecure=True)

    threads = [threading.Thread(target=one, daemon=True) for _ in range(n_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


if __name__ == "__main__":
    if sys.argv[1] == "server":
        serve(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), [int(h) for h in sys.argv[5].split(",")],
              int(sys.argv[6]), int(sys.argv[7]), sys.argv[8])
    else:
        clients(sys.argv[2], int(sys.argv[3]))
