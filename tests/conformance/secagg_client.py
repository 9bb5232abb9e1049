"""Secure-aggregation clients written from proto/fedser/v1/coordinator.proto and docs/protocol.md
("Secure aggregation") alone: `cryptography` and pycryptodome for the primitives, no fedser code.

Run as a script: `python secagg_client.py PROTO_ROOT OUT_DIR HOST:PORT N`. N clients (threads)
join, and for each TRAIN task client k sends the update delta = 0.001·(k+1) everywhere with
n_samples = 10·(k+1) through the four SecAgg calls; a client whose unmask task names a node in
both lists refuses it. Prints one JSON line.
"""

from __future__ import annotations

import json
import math
import os
import struct
import sys
import threading
import time
from pathlib import Path

import grpc
import numpy as np
from Crypto.Protocol.SecretSharing import Shamir
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat
from grpc_tools import protoc

sys.path.insert(0, str(Path(__file__).parent))
from proto_client import PROTOCOL_VERSION, parse_safetensors  # noqa: E402  (the other doc-only client)


def raw_public(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def agreed(own: X25519PrivateKey, peer: bytes, purpose: bytes, context: bytes) -> bytes:
    secret = own.exchange(X25519PublicKey.from_public_bytes(peer))
    return HKDF(hashes.SHA256(), 32, salt=None, info=b"fedser-secagg/1 " + purpose + b" " + context).derive(secret)


def prg(key: bytes, n: int) -> np.ndarray:
    return np.frombuffer(Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor().update(bytes(4 * n)), "<u4").astype(np.uint32)


def shares_of(secret: bytes, t: int, n: int) -> list[bytes]:
    first, second = Shamir.split(t, n, secret[:16]), Shamir.split(t, n, secret[16:])
    return [struct.pack(">I", i) + a + b for (i, a), (_, b) in zip(first, second)]


def quantised(state: dict[str, np.ndarray], value: float, n_samples: int, run: dict, n_clients: int) -> np.ndarray:
    privacy = run["privacy"]
    cap, clip = privacy["secagg_max_weight"], privacy["secagg_clip_norm"]
    names = sorted("delta." + n[2:] for n in state if n.startswith("w."))
    sizes = [state["w." + n[6:]].size for n in names]
    flat = np.full(sum(sizes), value, np.float64)
    norm = float(np.linalg.norm(flat))
    flat *= min(1.0, clip / norm) * min(n_samples, cap) / cap
    scale = 2.0 ** math.floor(math.log2((2**31 - 1 - n_clients) / (n_clients * clip)))
    rounded = np.floor(np.clip(flat, -clip, clip) * scale + np.random.default_rng().random(flat.size)).astype(np.int64)
    return np.concatenate([rounded.astype(np.uint32), np.array([min(n_samples, cap), 1], np.uint32)])


def one_client(pb, pb_grpc, target: str, k: int, out: dict) -> None:
    stub = pb_grpc.CoordinatorStub(grpc.insecure_channel(target))
    info = stub.Describe(pb.DescribeRequest(protocol_version=PROTOCOL_VERSION), timeout=10)
    assert info.secure_aggregation == "secagg+"  # so: label counts as one bit
    reply = stub.Join(pb.JoinRequest(protocol_version=PROTOCOL_VERSION, name=f"secagg{k}", feature_name="emobase",
                                     feature_dim=988, label_counts=[1, 0, 0, 0], n_eval=0), timeout=10)
    session, run = reply.session, json.loads(reply.settings.run_config_json)
    assert run["privacy"]["secure_aggregation"] == "secagg+"
    stage_wait = run["federation"]["round_timeout_s"] + run["privacy"]["secagg_stage_timeout_s"] + 10
    kinds = out.setdefault(k, [])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        task = stub.GetTask(pb.GetTaskRequest(protocol_version=PROTOCOL_VERSION, session=session), timeout=40)
        kinds.append(pb.TaskKind.Name(task.kind))
        if task.kind == pb.TASK_KIND_SHUTDOWN:
            return
        if task.kind != pb.TASK_KIND_TRAIN:
            time.sleep(task.retry_after_s)
            continue
        state = parse_safetensors(task.model.data)
        ids = {"protocol_version": PROTOCOL_VERSION, "session": session, "round": task.round, "task_id": task.task_id}
        share_key, mask_key, seed = X25519PrivateKey.generate(), X25519PrivateKey.generate(), os.urandom(32)
        peers = stub.SecAggAdvertise(pb.SecAggAdvertiseRequest(**ids, share_key=raw_public(share_key),
                                                               mask_key=raw_public(mask_key)), timeout=stage_wait)
        me, t, context = peers.node, peers.threshold, peers.context
        holders = sorted([p.node for p in peers.peers] + [me])
        mask_private = mask_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        key_shares, seed_shares = shares_of(mask_private, t, len(holders)), shares_of(seed, t, len(holders))
        held = {me: (key_shares[holders.index(me)], seed_shares[holders.index(me)])}
        keys_of = {p.node: p for p in peers.peers}
        sealed = []
        for p in peers.peers:
            nonce, i = os.urandom(12), holders.index(p.node)
            aad = b"fedser-secagg/1 share " + context + struct.pack(">II", me, p.node)
            box = AESGCM(agreed(share_key, p.share_key, b"share", context))
            sealed.append(pb.SecAggShare(sender=me, recipient=p.node,
                                         ciphertext=nonce + box.encrypt(nonce, key_shares[i] + seed_shares[i], aad)))
        mine = stub.SecAggShare(pb.SecAggShareRequest(**ids, shares=sealed), timeout=stage_wait)
        for s in mine.shares:
            aad = b"fedser-secagg/1 share " + context + struct.pack(">II", s.sender, me)
            box = AESGCM(agreed(share_key, keys_of[s.sender].share_key, b"share", context))
            plain = box.decrypt(s.ciphertext[:12], s.ciphertext[12:], aad)
            held[s.sender] = (plain[:36], plain[36:])
        n = peers.vector_length
        y = quantised(state, 0.001 * (k + 1), 10 * (k + 1), run, peers.n_clients) + prg(seed, n)
        for s in mine.shares:
            pair = prg(agreed(mask_key, keys_of[s.sender].mask_key, b"mask", context), n)
            y = y + pair if me < s.sender else y - pair
        ask = stub.SecAggMask(pb.SecAggMaskRequest(**ids, masked=y.astype("<u4").tobytes()), timeout=stage_wait)
        if set(ask.seed_of) & set(ask.key_of) or me in ask.key_of:
            out.setdefault("refused", []).append(k)
            continue
        stub.SecAggUnmask(pb.SecAggUnmaskShares(
            **ids, seed_shares=[pb.SecAggNodeShare(node=v, share=held[v][1]) for v in ask.seed_of],
            key_shares=[pb.SecAggNodeShare(node=v, share=held[v][0]) for v in ask.key_of]), timeout=30)


def main(proto_root: str, out: str, target: str, n: str) -> dict[str, object]:
    assert protoc.main(["protoc", f"-I{proto_root}", f"--python_out={out}", f"--grpc_python_out={out}",
                        "fedser/v1/coordinator.proto"]) == 0
    sys.path.insert(0, out)
    from fedser.v1 import coordinator_pb2 as pb
    from fedser.v1 import coordinator_pb2_grpc as pb_grpc

    result: dict = {}
    threads = [threading.Thread(target=one_client, args=(pb, pb_grpc, target, k, result)) for k in range(int(n))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"kinds": {str(k): v for k, v in result.items() if isinstance(k, int)}, "refused": result.get("refused", []),
            "fedser_modules_imported": sorted(m for m in sys.modules if m.startswith("fedser_"))}


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:5])))
