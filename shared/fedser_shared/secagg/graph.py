"""Who shares secrets with whom: SecAgg+'s random k-regular graph (Bell et al. 2020, a Harary
graph over a seeded random order of the nodes), or every pair (Bonawitz et al. 2017)."""

from __future__ import annotations

import numpy as np


def neighbour_graph(n_nodes: int, degree: int | None, seed: int) -> dict[int, frozenset[int]]:
    """Nodes 1..n_nodes -> their neighbours. `degree` None, or at least n_nodes - 1: the complete
    graph. Otherwise `degree` must be even: the nodes are put on a ring in a random order drawn
    from `seed`, and each is joined to the degree/2 nearest on either side."""
    nodes = list(range(1, n_nodes + 1))
    if degree is None or degree >= n_nodes - 1:
        return {node: frozenset(nodes) - {node} for node in nodes}
    if degree < 2 or degree % 2:
        raise ValueError(f"a SecAgg+ neighbour degree must be even and at least 2, got {degree}")
    ring = [int(i) + 1 for i in np.random.default_rng(seed).permutation(n_nodes)]
    graph: dict[int, set[int]] = {node: set() for node in nodes}
    for position, node in enumerate(ring):
        for step in range(1, degree // 2 + 1):
            peer = ring[(position + step) % n_nodes]
            graph[node].add(peer)
            graph[peer].add(node)
    return {node: frozenset(peers) for node, peers in graph.items()}
