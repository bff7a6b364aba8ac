"""Real secret-shared inference: each party is a separate process running CrypTen over torch.distributed (gloo).

The model owner (rank 0) secret-shares the weights, the data owner (rank 1) the images; every
other process gets zeros of the same shape, so no party sees what it does not own. Parties
rendezvous on loopback (a free TCP port) unless RENDEZVOUS is set in the environment (e.g.
env:// with MASTER_ADDR/MASTER_PORT, to run `run_party` on separate machines; see docs/mpc.md).

Counted traffic is the online phase only: Beaver triples come from CrypTen's trusted first party,
which generates them locally.
"""

from __future__ import annotations

import copy
import hashlib
import multiprocessing as mp
import os
import queue as queue_module
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from mpc.calibration import calibrate
from mpc.compat import load_crypten
from mpc.cost import modelled_latency
from mpc.encrypted import DATA_OWNER, MODEL_OWNER, CostMeter, EncryptedModel, check_supported
from secsuite.errors import SecsuiteError
from secsuite.model import Classifier
from secsuite.progress import progress_bar


class PartyError(SecsuiteError):
    """An MPC party process failed, died or timed out."""


@dataclass(frozen=True)
class Knobs:
    """CrypTen's approximation settings (defaults are CrypTen's own)."""

    exp_iterations: int = 8
    reciprocal_iterations: int = 10
    precision_bits: int = 16
    sqrt_iterations: int = 3  # Newton-Raphson iterations of inv_sqrt (LayerNorm)

    def __post_init__(self):
        if not 1 <= self.exp_iterations <= 32:
            raise ValueError(f"exp_iterations must be in [1, 32], got {self.exp_iterations}")
        if not 1 <= self.reciprocal_iterations <= 64:
            raise ValueError(f"reciprocal_iterations must be in [1, 64], got {self.reciprocal_iterations}")
        if not 8 <= self.precision_bits <= 30:
            raise ValueError(f"precision_bits must be in [8, 30], got {self.precision_bits}")
        if not 1 <= self.sqrt_iterations <= 64:
            raise ValueError(f"sqrt_iterations must be in [1, 64], got {self.sqrt_iterations}")

    def apply(self, cfg) -> None:
        cfg.functions.exp_iterations = self.exp_iterations
        cfg.functions.reciprocal_nr_iters = self.reciprocal_iterations
        cfg.encoder.precision_bits = self.precision_bits
        cfg.functions.sqrt_nr_iters = self.sqrt_iterations


@dataclass
class PrivateResult:
    name: str
    logits: torch.Tensor  # decrypted private outputs
    plain_logits: torch.Tensor
    argmax_agreement: float
    max_abs_error: float
    wall_time_s: float  # slowest party, from sharing the input to revealing the output
    compute_s: float  # wall time minus time spent inside communication calls
    rounds: list[int]  # per party
    bytes: list[int]  # per party
    by_op: dict[str, dict[str, float]]  # operation type -> rounds (max)/bytes (both parties summed)/calls/seconds (slowest party)
    knobs: Knobs
    modelled_latency_s: dict[str, float] = field(default_factory=dict)
    calibration: dict[str, dict[str, float]] = field(default_factory=dict)  # layer -> min/max/prescale (mpc.calibration)

    @property
    def total_bytes(self) -> int:
        return sum(self.bytes)

    @property
    def max_rounds(self) -> int:
        return max(self.rounds)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _hide_weights(classifier: Classifier) -> Classifier:
    """What a party other than the model owner receives: the architecture with zeroed weights.

    The input normalisation stays: it is public preprocessing that every party applies locally.
    """
    hidden = copy.deepcopy(classifier)
    with torch.no_grad():
        for tensor in list(hidden.net.parameters()) + list(hidden.net.buffers()):
            if tensor.is_floating_point():
                tensor.zero_()
    return hidden


def _derived_seed(seed: int, *purpose) -> int:
    digest = hashlib.sha256(repr((seed, *purpose)).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1  # a non-negative 63-bit torch seed


def seed_generators(crypten, seed: int, rank: int, world_size: int) -> None:
    """Replace CrypTen's random seeds (os.urandom at init) by ones derived from `seed`, consistently across parties.

    Every random value of the protocol (sharings of zero, the trusted first party's Beaver triples, the
    shares that make fixed-point truncation probabilistic) comes from these four generators per party,
    so two sessions with the same seed, parties, models and inputs compute the same shares and outputs.
    "next" of rank r is "prev" of rank r+1, as CrypTen's own seed exchange sets them up.
    Anyone who knows the seed can recompute every share: a seeded session is for reproducible evaluation only.
    """
    for device in crypten.generators["prev"]:
        crypten.generators["next"][device].manual_seed(_derived_seed(seed, "pair", rank))
        crypten.generators["prev"][device].manual_seed(_derived_seed(seed, "pair", (rank - 1) % world_size))
        crypten.generators["local"][device].manual_seed(_derived_seed(seed, "local", rank))
        crypten.generators["global"][device].manual_seed(_derived_seed(seed, "global"))


def run_party(rank: int, world_size: int, classifiers: Sequence[Classifier], x: torch.Tensor, knobs: Knobs,
              private_weights: bool, results, seed: int | None = None) -> None:
    """One party's whole session; puts ("result", rank, index, payload) per model on `results`.

    Expects RENDEZVOUS (and MASTER_ADDR/MASTER_PORT for env://) in the environment.
    seed: derive CrypTen's randomness from it (reproducible runs, no secrecy; see `seed_generators`);
    None keeps CrypTen's own random seeds.
    """
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world_size), "DISTRIBUTED_BACKEND": "gloo"})
    torch.set_num_threads(1)
    crypten = load_crypten()
    crypten.cfg.communicator.verbose = True  # the counters stay zero otherwise
    knobs.apply(crypten.cfg)
    crypten.init()
    if seed is not None:
        seed_generators(crypten, seed, rank, world_size)
    comm = crypten.comm.get()
    try:
        for index, classifier in enumerate(classifiers):
            model = EncryptedModel(crypten, classifier.eval(), private_weights)
            meter = CostMeter(crypten)
            comm.barrier()
            comm.reset_communication_stats()
            start = time.perf_counter()
            with torch.no_grad():
                logits = model(crypten.cryptensor(x, src=DATA_OWNER), meter).get_plain_text()
            wall = time.perf_counter() - start
            stats = comm.get_communication_stats()
            payload = {"logits": logits if rank == DATA_OWNER else None, "wall": wall, "comm_time": stats["time"],
                       "rounds": stats["rounds"], "bytes": stats["bytes"], "by_op": meter.by_op}
            results.put(("result", rank, index, payload))
    finally:
        crypten.uninit()


def _party_main(rank, world_size, classifiers, x, knobs, private_weights, results, rendezvous, seed):
    os.environ["RENDEZVOUS"] = rendezvous
    try:
        run_party(rank, world_size, classifiers, x, knobs, private_weights, results, seed)
    except BaseException as error:  # report any failure to the launcher as one line, then die
        results.put(("error", rank, None, f"{type(error).__name__}: {error}".splitlines()[0]))
        raise


def _last_error(results) -> str:
    # A party that raised put its one-line error on the queue just before exiting; show it if it arrives.
    try:
        while True:
            kind, rank, _, payload = results.get(timeout=1.0)
            if kind == "error":
                return f": {payload}"
    except queue_module.Empty:
        return ""


def _launch(classifiers: Sequence[Classifier], x: torch.Tensor, parties: int, knobs: Knobs, private_weights: bool,
            timeout_s: float, seed: int | None) -> list[list[dict]]:
    """Run every model through one multi-party session; returns payloads[index][rank]."""
    rendezvous = os.environ.get("RENDEZVOUS") or f"tcp://127.0.0.1:{_free_port()}"
    context = mp.get_context("spawn")
    results = context.Queue()
    hidden_models = [_hide_weights(c) for c in classifiers] if private_weights else classifiers
    processes = []
    for rank in range(parties):
        models = classifiers if rank == MODEL_OWNER else hidden_models
        inputs = x if rank == DATA_OWNER else torch.zeros_like(x)
        processes.append(context.Process(target=_party_main, daemon=True, name=f"mpc-party-{rank}",
                                         args=(rank, parties, list(models), inputs, knobs, private_weights, results, rendezvous, seed)))
    payloads: list[list[dict | None]] = [[None] * parties for _ in classifiers]
    expected = len(classifiers) * parties
    deadline = time.monotonic() + timeout_s
    try:
        for process in processes:
            process.start()
        with progress_bar("private inference", total=expected) as advance:
            received = 0
            while received < expected:
                try:
                    kind, rank, index, payload = results.get(timeout=0.5)
                except queue_module.Empty:
                    dead = [(p.name, p.exitcode) for p in processes if p.exitcode not in (None, 0)]
                    if dead:
                        raise PartyError(f"MPC party {dead[0][0]} died with exit code {dead[0][1]} before finishing"
                                         f"{_last_error(results)}")
                    if time.monotonic() > deadline:
                        raise PartyError(f"MPC run timed out after {timeout_s:.0f}s (a party stopped responding)")
                    continue
                if kind == "error":
                    raise PartyError(f"MPC party {rank} failed: {payload}")
                payloads[index][rank] = payload
                received += 1
                advance()
        for process in processes:
            process.join(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join()
    return payloads


def private_inference_many(classifiers: Sequence[Classifier], x: torch.Tensor, parties: int = 2, knobs: Knobs | None = None,
                           private_weights: bool = True, timeout_s: float = 600.0,
                           calibration: torch.Tensor | None = None, seed: int | None = None) -> list[PrivateResult]:
    """Private inference of several models on the same images in one session (parties start once).

    `seed`: identical calls give identical logits and counters (see `seed_generators`: for evaluation, not secrecy);
    None: CrypTen's own random seeds, and the logits' last fixed-point bits differ from run to run.

    `calibration`: the model owner's plaintext images (e.g. training data, never the private batch) used
    to calibrate public prescales for LayerNorm's inv_sqrt and ReLU-softmax's reciprocal (mpc.calibration).
    Without it, models run with whatever prescales they carry (none: CrypTen's ranges as they are).
    """
    if parties < 2:
        raise ValueError(f"parties must be >= 2, got {parties}")
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
    if not classifiers:
        raise ValueError("classifiers must not be empty")
    knobs = knobs or Knobs()
    x = x.detach().cpu().float()
    plain = []
    for classifier in classifiers:
        classifier.check_inputs(x)
        check_supported(classifier, classifier.name)
        with torch.no_grad():
            plain.append(classifier.eval()(x.to(classifier.device)).cpu())
    cpu_models = [copy.deepcopy(c).cpu().eval() for c in classifiers]
    reports = [calibrate(m, calibration.detach().cpu().float()) if calibration is not None else {} for m in cpu_models]
    payloads = _launch(cpu_models, x, parties, knobs, private_weights, timeout_s, seed)
    results = [_result(c.name, p, per_party, knobs) for c, p, per_party in zip(classifiers, plain, payloads)]
    for result, report in zip(results, reports):
        result.calibration = report
    return results


def private_inference(classifier: Classifier, x: torch.Tensor, parties: int = 2, knobs: Knobs | None = None,
                      private_weights: bool = True, timeout_s: float = 600.0, calibration: torch.Tensor | None = None,
                      seed: int | None = None) -> PrivateResult:
    """Run `classifier` on images `x` (in [0,1]) under CrypTen secret sharing with real party processes."""
    return private_inference_many([classifier], x, parties, knobs, private_weights, timeout_s, calibration, seed)[0]


def _result(name: str, plain: torch.Tensor, per_party: list[dict], knobs: Knobs) -> PrivateResult:
    logits = per_party[DATA_OWNER]["logits"]
    by_op: dict[str, dict[str, float]] = {}
    for payload in per_party:
        for kind, entry in payload["by_op"].items():
            merged = by_op.setdefault(kind, {"rounds": 0, "bytes": 0, "calls": entry["calls"], "seconds": 0.0})
            merged["rounds"] = max(merged["rounds"], entry["rounds"])
            merged["bytes"] += entry["bytes"]
            merged["seconds"] = max(merged["seconds"], entry.get("seconds", 0.0))
    wall = max(p["wall"] for p in per_party)
    compute = max(p["wall"] - p["comm_time"] for p in per_party)
    rounds = [int(p["rounds"]) for p in per_party]
    sent = [int(p["bytes"]) for p in per_party]
    error = (logits - plain).abs().max().item() if torch.isfinite(logits).all() else float("inf")
    return PrivateResult(
        name=name, logits=logits, plain_logits=plain,
        argmax_agreement=(logits.argmax(1) == plain.argmax(1)).float().mean().item(), max_abs_error=error,
        wall_time_s=wall, compute_s=compute, rounds=rounds, bytes=sent, by_op=by_op, knobs=knobs,
        modelled_latency_s=modelled_latency(compute, max(rounds), sum(sent)),
    )
