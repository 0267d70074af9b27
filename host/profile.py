"""edgeq profile: where the time goes, per layer, for float32 and int8 on the device.

The LiteRT Python interpreter has no op profiler. The method here, "prefix differences":
1. cut (on the host) from each .tflite of the artifacts, with the flatbuffer object API of
   the schema edgeq.host.tflite_file reads with:
   - prefix model k: the first k+1 ops, output = op k's first output. The tensors are the
     source's own (same shapes, same scales and zero points), only the weights the kept ops
     use are kept, the signature is dropped;
   - single-op model k: op k alone, input = its first activation input (its other
     activation inputs become zero-filled constants), output = its first output;
   - a zero-op model (input = output): the cost of the timing loop itself (`overhead_ms`);
   - and the deployed file itself, unchanged (`whole_ms`);
2. push them, named by their sha256, to the device store's profiles/ directory;
3. time them all on the device in one worker process (edgeq.device.profile: loaded first,
   warm-up, then `rounds` rounds in a seeded shuffled order, every model timed in every
   round, so drift hits all of them alike) through the daemon's `profile` op (same queue as
   bench: it never overlaps another measurement) or the one-shot agent;
4. layer k's time = p50(prefix k) - p50(prefix k-1) (layer 0: minus the zero-op model).
   A difference below zero is noise and is shown as measured, never clamped.

The check, and what it proves. The prefix differences telescope: their sum is
p50(last prefix) - p50(zero-op) by construction. The check compares that sum with the deployed
file, timed as its own model in the same interleaved rounds, minus the same loop overhead:
|sum_layers_ms - (whole_ms - overhead_ms)| <= tolerance_ms, with
tolerance_ms = max(TOLERANCE_REL x (whole_ms - overhead_ms), TOLERANCE_ABS_MS). Passing shows
that the cut models cost what the deployed file costs (the cut changed nothing that takes
time) and that noise and drift stay under the tolerance. It cannot show that layers add up:
prefix differences do by construction. The second estimate does: each op timed alone in its
own single-op model (random input), minus the loop overhead; the sum of those, against the
same whole, is a real additivity check (`isolated_*`), and a gap there is the in-context
effect (cache reuse between ops, XNNPACK's fused execution and per-delegate invoke cost) that
no per-layer split can attribute. Its verdict uses the same tolerance and is reported, not
enforced.

Which nodes XNNPACK took: each model's node list after delegation (runtime.count_delegated_
nodes on the device); layer k was taken when prefix k has one more delegated node than
prefix k-1 (`xnnpack_*`); the single-op model says the same for the op alone
(`xnnpack_isolated_*`). The flags of a model must add up to its whole file's delegated count
(`xnnpack_consistent`). With XNNPACK off every flag is false.

float32 and int8 ops are paired by (op name, output tensor name) with difflib; an op only one
model has (e.g. a QUANTIZE) gets a row of its own.
The `edgeq.profile/1` document: its keys are listed in docs/SCHEMA.md; `profile_figure(doc,
path)` draws it (the fleet report uses it).
Imports: standard library, numpy, the flatbuffers schema (through edgeq.host.tflite_file),
edgeq.device (errors, fileutil, profile, protocol, settings, store, client), edgeq.host
(artifacts, bench_remote, link, tflite_file); matplotlib inside profile_figure.
"""
from __future__ import annotations

import copy
import difflib
import hashlib
import io
import json
import logging
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
from edgeq.device.errors import EdgeqError, UnknownOpError, UsageError, raise_from_wire
from edgeq.device.fileutil import utc_now
from edgeq.device.profile import (
    make_plan,
    profile_dir,
    profile_model_path,
)
from edgeq.device.protocol import DEFAULT_BENCH_TIMEOUT_S, MAX_PROFILE_MODELS
from edgeq.device.settings import BenchSettings, settings_argv
from edgeq.device.store import MODEL_KINDS, Layout
from edgeq.host.artifacts import load_artifacts
from edgeq.host.bench_remote import AgentFailedError, NotDeployedError, open_session
from edgeq.host.link import Connection, RemoteNotFoundError, resolve_device_dir
from edgeq.host.tflite_file import TfliteFile, _schema, parse_tflite

logger = logging.getLogger(__name__)

SCHEMA = "edgeq.profile/1"
#: the check's tolerance: this share of the whole model's net time ...
TOLERANCE_REL = 0.10
#: ... but never below this (timer and Python-call jitter of one invoke), in ms
TOLERANCE_ABS_MS = 0.02
DEFAULT_RUNS_MIN = 200
DEFAULT_ROUNDS = 10
DEFAULT_WARMUP_RUNS = 10
ROLES = ("whole", "base", "prefix", "op")
_ITEM_BYTES = {"FLOAT32": 4, "FLOAT16": 2, "FLOAT64": 8, "INT8": 1, "UINT8": 1, "INT16": 2,
               "INT32": 4, "INT64": 8, "BOOL": 1}
EventCallback = Callable[[str, dict], None]


class ProfileError(EdgeqError):
    """A model that cannot be cut for profiling, or a profile result that does not fit."""


@dataclass(frozen=True)
class CutModel:
    """One model to time: `role` whole / base (zero ops) / prefix / op, of `kind`."""

    kind: str
    role: str
    op_index: Optional[int]
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


# ---------------------------------------------------------------------------------------------
# cutting
# ---------------------------------------------------------------------------------------------


def _pack(model_t: Any) -> bytes:
    import flatbuffers  # the schema's own serializer (a dependency of ai-edge-litert)

    builder = flatbuffers.Builder(1024)
    builder.Finish(model_t.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


class _Cutter:
    """Writes sub-models of one .tflite (subgraph 0) that share its tensors."""

    def __init__(self, raw: bytes, info: TfliteFile) -> None:
        schema = _schema()
        self.schema = schema
        self.info = info
        self.model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(raw, 0))
        sg = self.model.subgraphs[0]
        self.sg = sg
        if info.subgraphs != 1:
            logger.info("%s has %d subgraphs; only the first is cut", info.path,
                        info.subgraphs)
        # buffers every cut keeps: the empty sentinel, metadata, other subgraphs' tensors
        self.always = {0}
        for md in self.model.metadata or []:
            self.always.add(int(md.buffer))
        for other in self.model.subgraphs[1:]:
            self.always.update(int(t.buffer) for t in other.tensors or [])

    def cut(self, op_indices: list[int], inputs: list[int], outputs: list[int],
            zero_constants: tuple[int, ...] = ()) -> bytes:
        """A model of ops `op_indices` with graph `inputs`/`outputs` (tensor indices);
        `zero_constants` tensors become zero-filled constants."""
        schema, src = self.schema, self.sg
        ops = [src.operators[i] for i in op_indices]
        tensors = list(src.tensors)
        buffers: list[Any] = list(self.model.buffers)
        for t_index in zero_constants:
            rec = self.info.tensors[t_index]
            size = int(np.prod(rec.shape or [1])) * _ITEM_BYTES[rec.dtype]
            buf = schema.BufferT()
            buf.data = np.zeros(size, dtype=np.uint8)
            buffers.append(buf)
            t = copy.copy(tensors[t_index])
            t.buffer = len(buffers) - 1
            tensors[t_index] = t
        used = set(self.always)
        for op in ops:
            for i in [*(op.inputs if op.inputs is not None else []),
                      *(op.intermediates if op.intermediates is not None else [])]:
                if int(i) >= 0:
                    used.add(int(tensors[int(i)].buffer))
        used.update(int(tensors[i].buffer) for i in [*inputs, *outputs])
        sg = copy.copy(src)
        sg.operators, sg.inputs, sg.outputs, sg.tensors = ops, list(inputs), list(outputs), \
            tensors
        model = copy.copy(self.model)
        model.subgraphs = [sg, *self.model.subgraphs[1:]]
        model.buffers = [b if i in used else schema.BufferT() for i, b in enumerate(buffers)]
        model.signatureDefs = None
        return _pack(model)


def _activation_inputs(info: TfliteFile, op_index: int) -> list[int]:
    return [i for i in info.operators[op_index].inputs
            if i >= 0 and not info.tensors[i].is_constant]


def cut_models(path: Path, kind: str) -> list[CutModel]:
    """The models that profile one .tflite: whole (the file's bytes), base (zero ops), one
    prefix per op and one single-op model per op that has an activation input of rank >= 2
    (the device's harness feeds one image-like input)."""
    raw = Path(path).read_bytes()
    info = parse_tflite(raw, path)
    if len(info.inputs) != 1:
        raise ProfileError(f"{Path(path).name} has {len(info.inputs)} inputs",
                           hint="edgeq profiles models with one input")
    if not info.operators:
        raise ProfileError(f"{Path(path).name} has no operators",
                           hint="convert the model again")
    cutter = _Cutter(raw, info)
    first_in = info.inputs[0]
    out = [CutModel(kind, "whole", None, raw),
           CutModel(kind, "base", None, cutter.cut([], [first_in], [first_in]))]
    for k, op in enumerate(info.operators):
        if not op.outputs:
            raise ProfileError(f"op {k} ({op.name}) of {Path(path).name} has no output",
                               hint="convert the model again")
        out.append(CutModel(kind, "prefix", k,
                            cutter.cut(list(range(k + 1)), [first_in], [op.outputs[0]])))
    for k, op in enumerate(info.operators):
        acts = _activation_inputs(info, k)
        if not acts or len(info.tensors[acts[0]].shape) < 2 \
                or any(info.tensors[a].dtype not in _ITEM_BYTES for a in acts[1:]):
            continue
        out.append(CutModel(kind, "op", k,
                            cutter.cut([k], [acts[0]], [op.outputs[0]], tuple(acts[1:]))))
    return out


def layer_names(path: Path) -> list[dict[str, Any]]:
    """[{"index", "op", "tensor"}] per op of the .tflite (tensor: its first output's name)."""
    info = parse_tflite(Path(path).read_bytes(), path)
    return [{"index": op.index, "op": op.name,
             "tensor": info.tensors[op.outputs[0]].name if op.outputs else ""}
            for op in info.operators]


def pair_layers(f32: list[dict[str, Any]], i8: list[dict[str, Any]]
                ) -> list[tuple[Optional[int], Optional[int]]]:
    """(float32 op index, int8 op index) rows: ops paired by (op, tensor) name with difflib,
    positionally inside a changed block; an op only one side has gets None on the other."""
    key = [(x["op"], x["tensor"]) for x in f32], [(x["op"], x["tensor"]) for x in i8]
    rows: list[tuple[Optional[int], Optional[int]]] = []
    matcher = difflib.SequenceMatcher(None, key[0], key[1], autojunk=False)
    for _tag, a0, a1, b0, b1 in matcher.get_opcodes():
        n = max(a1 - a0, b1 - b0)
        for j in range(n):
            rows.append((a0 + j if a0 + j < a1 else None, b0 + j if b0 + j < b1 else None))
    return rows


# ---------------------------------------------------------------------------------------------
# the device
# ---------------------------------------------------------------------------------------------

#: moves each (part, final) pair of arguments into place (one round trip for all files)
_MOVE_PARTS = 'while [ "$#" -gt 1 ]; do mv -f "$1" "$2" || exit 1; shift 2; done'


def push_models(conn: Connection, dir_abs: str, files: dict[str, bytes]) -> int:
    """Copy sha256 -> bytes to the device's profiles/ directory (those not there yet); the
    number of files sent. Each lands under a part name of its own first (two hosts pushing
    the same model never write one file) and is renamed when complete."""
    pdir = profile_dir(dir_abs)
    try:  # only into a store edgeq made (deploy marks it): never create one elsewhere
        conn.get_file(Layout(dir_abs).marker, io.BytesIO())
    except RemoteNotFoundError:
        raise NotDeployedError(
            f"{dir_abs} on {conn.name} is not an edgeq device directory (no agent deployed)",
            hint=f"run edgeq deploy --host {conn.name} ARTIFACTS first (it installs the "
                 "agent that times the layers)") from None
    made = conn.run(["mkdir", "-p", pdir], timeout_s=60)
    if not made.ok:
        raise AgentFailedError(f"cannot create {pdir} on {conn.name}: "
                               f"{made.stderr.decode('utf-8', 'replace').strip()}",
                               hint=f"check {dir_abs} on the device (edgeq deploy made it)")
    listed = conn.run(["ls", "-1", pdir], timeout_s=60)
    present = set(listed.stdout.decode("utf-8", "replace").split()) if listed.ok else set()
    missing = [sha for sha in files if f"{sha}.tflite" not in present]
    tag = uuid.uuid4().hex[:12]
    moves: list[str] = []
    with tempfile.TemporaryDirectory(prefix="edgeq-profile-") as tmp:
        for sha in missing:
            local = Path(tmp) / f"{sha}.tflite"
            local.write_bytes(files[sha])
            final = profile_model_path(dir_abs, sha)
            conn.put_file(local, f"{final}.{tag}.part")
            moves += [f"{final}.{tag}.part", final]
            local.unlink()
    if missing:
        done = conn.run(["sh", "-c", _MOVE_PARTS, "edgeq-profile", *moves], timeout_s=60)
        if not done.ok:
            raise AgentFailedError(f"cannot install the cut models in {pdir} on {conn.name}",
                                   hint="check the device's free space and permissions")
    return len(missing)


def _one_shot(conn: Connection, dir_abs: str, plan: dict[str, Any],
              settings: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """The plan run by `agent profile PLAN.json --json` (no daemon)."""
    data = json.dumps(plan, separators=(",", ":")).encode("utf-8")
    name = f"plan-{uuid.uuid4().hex}.json"  # its own: another host's run may remove its own
    with tempfile.TemporaryDirectory(prefix="edgeq-profile-") as tmp:
        local = Path(tmp) / name
        local.write_bytes(data)
        remote = profile_dir(dir_abs) + "/" + name
        conn.put_file(local, remote)
    layout = Layout(dir_abs)
    result = conn.run(layout.agent_argv("profile", remote, *settings_argv(settings), "--json"),
                      timeout_s=timeout_s)
    conn.run(["rm", "-f", remote], timeout_s=60)
    doc: Any = None
    try:
        doc = json.loads(result.stdout.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        pass
    if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
        raise_from_wire(doc["error"])
    if not result.ok or not isinstance(doc, dict):
        tail = result.stderr.decode("utf-8", "replace").strip().splitlines()
        raise AgentFailedError(
            f"the agent on {conn.name} failed to profile (exit {result.exit_status}): "
            f"{tail[-1] if tail else 'no output'}",
            hint=f"run edgeq deploy --host {conn.name} again (the agent may predate profile)")
    doc["agent"] = {"path": "one-shot"}
    return doc


def measure_on_device(conn: Connection, dir_abs: str, shas: list[str], *,
                      settings: dict[str, Any], warmup_runs_min: int, runs_min: int,
                      rounds: int, seed: int, use_daemon: bool, timeout_s: float,
                      emit: Callable[..., None]) -> dict[str, Any]:
    """The device's edgeq.profile_run/1 for the pushed models `shas`: through the daemon's
    `profile` op when one answers, else (or when the daemon predates the op) one-shot."""
    timing = {"warmup_runs_min": warmup_runs_min, "runs_min": runs_min, "rounds": rounds,
              "seed": seed}
    session, daemon_error = (open_session(conn, dir_abs, timeout_s, emit) if use_daemon
                             else (None, "--no-daemon"))
    try:
        if session is not None and session.path == "daemon":
            emit("path", path="daemon", daemon_error=None)
            try:
                return session.client.measure(
                    "profile", {"models": shas, **settings, **timing, "timeout_s": timeout_s},
                    alive=session.running)
            except UnknownOpError as exc:
                daemon_error = f"the daemon predates profile ({exc.message})"
    finally:
        if session is not None:
            session.close()
    emit("path", path="one-shot", daemon_error=daemon_error)
    plan = make_plan([(sha, profile_model_path(dir_abs, sha)) for sha in shas], **timing)
    return _one_shot(conn, dir_abs, plan, settings, timeout_s)


# ---------------------------------------------------------------------------------------------
# the document
# ---------------------------------------------------------------------------------------------


def _delta(a: Optional[int], b: Optional[int]) -> Optional[bool]:
    return None if a is None or b is None else a - b > 0


def summarize_kind(cuts: list[CutModel], by_sha: dict[str, dict[str, Any]],
                   tolerance_rel: float = TOLERANCE_REL,
                   tolerance_abs_ms: float = TOLERANCE_ABS_MS
                   ) -> tuple[dict[int, dict[str, Any]], dict[str, Any]]:
    """Per op {"ms", "isolated_ms", "xnnpack", "xnnpack_isolated"} and the kind's totals
    (whole, overhead, sums, deviations, tolerance, verdicts, XNNPACK counts) from the
    device's per-model results."""
    res = {(c.role, c.op_index): by_sha[c.sha256] for c in cuts}
    whole, base = res[("whole", None)], res[("base", None)]
    base_ms, whole_ms = base["latency_ms_p50"], whole["latency_ms_p50"]
    n = sum(1 for c in cuts if c.role == "prefix")
    layers: dict[int, dict[str, Any]] = {}
    prev_ms, prev_nodes = base_ms, 0 if base.get("delegated_nodes") is not None else None
    for k in range(n):
        p = res[("prefix", k)]
        single = res.get(("op", k))
        layers[k] = {
            "ms": p["latency_ms_p50"] - prev_ms,
            "isolated_ms": single["latency_ms_p50"] - base_ms if single else None,
            "xnnpack": _delta(p.get("delegated_nodes"), prev_nodes),
            "xnnpack_isolated": _delta(single.get("delegated_nodes"), 0) if single else None,
        }
        prev_ms, prev_nodes = p["latency_ms_p50"], p.get("delegated_nodes")
    net = whole_ms - base_ms
    tol = max(tolerance_rel * net, tolerance_abs_ms)
    sum_layers = sum(v["ms"] for v in layers.values())
    isolated = [v["isolated_ms"] for v in layers.values() if v["isolated_ms"] is not None]
    missing = [k for k, v in layers.items() if v["isolated_ms"] is None]
    sum_isolated = sum(isolated) if not missing else None
    flags = [v["xnnpack"] for v in layers.values()]
    rounds = np.asarray(whole.get("latency_ms_round_p50") or [whole_ms], dtype=np.float64)
    totals = {
        "sha256": next(c.sha256 for c in cuts if c.role == "whole"),
        "ops": n,
        "whole_ms": whole_ms,
        "overhead_ms": base_ms,
        "whole_net_ms": net,
        "sum_layers_ms": sum_layers,
        "deviation_ms": sum_layers - net,
        "tolerance_ms": tol,
        "within_tolerance": abs(sum_layers - net) <= tol,
        "sum_isolated_ms": sum_isolated,
        "isolated_deviation_ms": None if sum_isolated is None else sum_isolated - net,
        "isolated_within_tolerance": None if sum_isolated is None
        else abs(sum_isolated - net) <= tol,
        "isolated_missing": missing,
        "whole_round_spread_ms": float(rounds.max() - rounds.min()),
        "runs_per_model": whole.get("runs"),
        "delegated_nodes": whole.get("delegated_nodes"),
        "total_nodes": whole.get("total_nodes"),
        "xnnpack_nodes": None if None in flags else sum(bool(f) for f in flags),
    }
    totals["xnnpack_consistent"] = (None if totals["xnnpack_nodes"] is None
                                    or totals["delegated_nodes"] is None
                                    else totals["xnnpack_nodes"] == totals["delegated_nodes"])
    return layers, totals


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    """b / a when both are positive (a ratio of a noise-negative time means nothing)."""
    return b / a if a is not None and b is not None and a > 0 and b > 0 else None


def build_rows(names: dict[str, list[dict[str, Any]]],
               layers: dict[str, dict[int, dict[str, Any]]]) -> list[dict[str, Any]]:
    """The doc's `layers`: one row per paired float32/int8 op."""
    rows = []
    for n, (fi, ii) in enumerate(pair_layers(names["float32"], names["int8"])):
        f = layers["float32"].get(fi) if fi is not None else None
        i = layers["int8"].get(ii) if ii is not None else None
        src = names["float32"][fi] if fi is not None else names["int8"][ii]  # type: ignore
        rows.append({
            "index": n, "op": src["op"], "tensor": src["tensor"],
            "float32_index": fi, "int8_index": ii,
            "float32_ms": f["ms"] if f else None, "int8_ms": i["ms"] if i else None,
            "ratio": _ratio(f["ms"] if f else None, i["ms"] if i else None),
            "float32_isolated_ms": f["isolated_ms"] if f else None,
            "int8_isolated_ms": i["isolated_ms"] if i else None,
            "isolated_ratio": _ratio(f["isolated_ms"] if f else None,
                                     i["isolated_ms"] if i else None),
            "xnnpack_float32": f["xnnpack"] if f else None,
            "xnnpack_int8": i["xnnpack"] if i else None,
            "xnnpack_isolated_float32": f["xnnpack_isolated"] if f else None,
            "xnnpack_isolated_int8": i["xnnpack_isolated"] if i else None,
        })
    return rows


METHOD = {
    "name": "prefix-difference",
    "layer_ms": "p50(prefix k) - p50(prefix k-1); layer 0: p50(prefix 0) - p50(zero-op model)."
                " Prefix k = the model's first k+1 ops with the source's own tensors and "
                "quantization, cut on the host; negative values are noise, shown as measured",
    "check": "sum_layers_ms telescopes to p50(last prefix) - p50(zero-op model); it is "
             "compared with whole_ms - overhead_ms, the deployed file timed as its own model "
             "in the same interleaved rounds: passing shows the cut models cost what the "
             "file costs and that noise/drift stay under tolerance_ms = max(tolerance_rel x "
             "(whole_ms - overhead_ms), tolerance_abs_ms); it does not show additivity",
    "isolated": "each op alone in a single-op model (random input, other activation inputs "
                "zero constants) minus overhead_ms; their sum against whole_ms - overhead_ms "
                "is the additivity check (a gap = in-context effects: cache reuse, XNNPACK "
                "fusion and per-delegate invoke cost)",
    "xnnpack": "from each model's node list after delegation: layer k is taken when prefix k "
               "has one more delegated node than prefix k-1",
}


def profile(
    conn: Connection,
    artifacts_dir: Path,
    *,
    device_dir: str = "~/.edgeq",
    threads: int = 1,
    xnnpack: bool = True,
    runtime: Optional[str] = None,
    warmup_runs_min: int = DEFAULT_WARMUP_RUNS,
    runs_min: int = DEFAULT_RUNS_MIN,
    rounds: int = DEFAULT_ROUNDS,
    seed: int = 0,
    use_daemon: bool = True,
    timeout_s: float = DEFAULT_BENCH_TIMEOUT_S,
    events: Optional[EventCallback] = None,
) -> dict[str, Any]:
    """Profile the float32 and int8 models of `artifacts_dir` on `conn`; the edgeq.profile/1
    document (the method and its check: the module docstring). `events(name, details)`:
    "cut", "pushed", "path", "measured"."""
    settings = {"threads": threads, "xnnpack": xnnpack, "runtime": runtime}
    BenchSettings(threads=threads, xnnpack=xnnpack, runtime=runtime,  # UsageError now
                  warmup_runs_min=warmup_runs_min, runs_min=runs_min,
                  runs_max=max(runs_min, BenchSettings().runs_max))  # runs_max: bench only
    if not 1 <= rounds <= 1000:
        raise UsageError(f"--rounds must be in [1, 1000], not {rounds}", hint="use 10")

    def emit(name: str, **details: Any) -> None:
        if events is not None:
            events(name, details)

    started, t0 = utc_now(), time.perf_counter()
    art = load_artifacts(Path(artifacts_dir))
    paths = {kind: art.models[kind].path for kind in MODEL_KINDS}
    cuts = {kind: cut_models(paths[kind], kind) for kind in MODEL_KINDS}
    names = {kind: layer_names(paths[kind]) for kind in MODEL_KINDS}
    files = {c.sha256: c.data for kind in MODEL_KINDS for c in cuts[kind]}
    if len(files) > MAX_PROFILE_MODELS:
        raise ProfileError(f"the models have too many ops to profile ({len(files)} cut "
                           f"models, at most {MAX_PROFILE_MODELS})",
                           hint="profile a smaller model")
    emit("cut", models=len(files), ops={k: len(names[k]) for k in MODEL_KINDS})
    dir_abs = resolve_device_dir(conn, device_dir)
    sent = push_models(conn, dir_abs, files)
    emit("pushed", sent=sent, total=len(files), directory=profile_dir(dir_abs))
    shas = list(files)
    run = measure_on_device(conn, dir_abs, shas, settings=settings,
                            warmup_runs_min=warmup_runs_min, runs_min=runs_min, rounds=rounds,
                            seed=seed, use_daemon=use_daemon, timeout_s=timeout_s, emit=emit)
    by_sha = {m["sha256"]: m for m in run.get("models") or []}
    if set(by_sha) != set(shas):
        raise ProfileError(f"the device timed {len(by_sha)} of the {len(shas)} models asked",
                           hint="run edgeq profile again")
    emit("measured", elapsed_s=run.get("elapsed_s"))
    per_kind = {kind: summarize_kind(cuts[kind], by_sha) for kind in MODEL_KINDS}
    totals = {kind: per_kind[kind][1] for kind in MODEL_KINDS}
    return {
        "schema": SCHEMA,
        "created_utc": started,
        "host": conn.name,
        "artifacts": str(Path(artifacts_dir).resolve()),
        "model_name": art.model_name,
        "settings": {**settings, "warmup_runs_min": warmup_runs_min, "runs_min": runs_min,
                     "rounds": rounds, "seed": seed, "device_dir": dir_abs,
                     "path": (run.get("agent") or {}).get("path"),
                     "tolerance_rel": TOLERANCE_REL, "tolerance_abs_ms": TOLERANCE_ABS_MS},
        "method": METHOD,
        "totals": totals,
        "within_tolerance": all(t["within_tolerance"] for t in totals.values()),
        "layers": build_rows(names, {k: per_kind[k][0] for k in MODEL_KINDS}),
        "runtime": run.get("runtime"),
        "environment": run.get("environment"),
        "device_elapsed_s": run.get("elapsed_s"),
        "elapsed_s": round(time.perf_counter() - t0, 3),
    }


# ---------------------------------------------------------------------------------------------
# presentation
# ---------------------------------------------------------------------------------------------


def _ms(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:.4f}"


def table_rows(doc: dict[str, Any]) -> list[list[str]]:
    """The per-layer table as text cells: #, op, tensor (shortened), float32 ms, int8 ms,
    int8/float32, XNNPACK (float32/int8: y/n/?), isolated float32 ms, isolated int8 ms."""
    def flag(v: Optional[bool]) -> str:
        return "?" if v is None else "y" if v else "n"

    rows = []
    for r in doc["layers"]:
        tensor = r["tensor"].split(";")[0]
        tensor = tensor.split("/", 1)[-1] if "/" in tensor else tensor
        rows.append([str(r["index"]), r["op"], tensor[:22], _ms(r["float32_ms"]),
                     _ms(r["int8_ms"]), "-" if r["ratio"] is None else f"{r['ratio']:.2f}",
                     f"{flag(r['xnnpack_float32'])}/{flag(r['xnnpack_int8'])}",
                     _ms(r["float32_isolated_ms"]), _ms(r["int8_isolated_ms"])])
    return rows


def check_lines(doc: dict[str, Any]) -> list[str]:
    """One line per kind: whole, overhead, sum of layers, deviation vs tolerance, verdict;
    and the isolated sum with its own verdict."""
    out = []
    for kind, t in doc["totals"].items():
        iso = ("isolated sum n/a (ops " + ",".join(map(str, t["isolated_missing"])) + ")"
               if t["sum_isolated_ms"] is None else
               f"isolated sum {t['sum_isolated_ms']:.4f} ms (deviation "
               f"{t['isolated_deviation_ms']:+.4f}, "
               f"{'within' if t['isolated_within_tolerance'] else 'OUTSIDE'} tolerance)")
        out.append(
            f"{kind}: whole {t['whole_ms']:.4f} ms - loop overhead {t['overhead_ms']:.4f} = "
            f"{t['whole_net_ms']:.4f} ms; sum of layers {t['sum_layers_ms']:.4f} ms "
            f"(deviation {t['deviation_ms']:+.4f}, tolerance ±{t['tolerance_ms']:.4f}: "
            f"{'WITHIN' if t['within_tolerance'] else 'OUTSIDE'}); {iso}; XNNPACK took "
            f"{t['xnnpack_nodes']} layers, the whole file {t['delegated_nodes']}/"
            f"{t['total_nodes']} nodes")
    return out


def profile_figure(doc: dict[str, Any], path: Path) -> Path:
    """Per-layer float32 vs int8 bars (ms) with the int8/float32 ratio above each pair and
    layers XNNPACK did not take hatched; a PNG at `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = doc["layers"]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(rows) + 2), 4.2))
    for offset, kind, color in ((-0.2, "float32", "#4C72B0"), (0.2, "int8", "#DD8452")):
        vals = [r[f"{kind}_ms"] or 0.0 for r in rows]
        bars = ax.bar(x + offset, vals, 0.4, color=color, label=kind)
        for bar, r in zip(bars, rows):
            if r[f"xnnpack_{kind}"] is False:
                bar.set_hatch("//")
                bar.set_edgecolor("black")
    top = max([abs(r[k] or 0.0) for r in rows for k in ("float32_ms", "int8_ms")] + [1e-9])
    for xi, r in zip(x, rows):
        if r["ratio"] is not None:
            ax.text(xi, max(r["float32_ms"] or 0, r["int8_ms"] or 0) + 0.02 * top,
                    f"{r['ratio']:.2f}x", ha="center", va="bottom", fontsize=7)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.margins(y=0.15)
    ax.set_xticks(x, [f"{r['index']} {r['op']}" for r in rows], rotation=60, ha="right",
                  fontsize=7)
    ax.set_ylabel("ms per layer (prefix difference)")
    within = "within" if doc.get("within_tolerance") else "NOT within"
    ax.set_title(f"{doc.get('model_name')} on {doc.get('host')}: per-layer latency; label = "
                 f"int8/float32, hatched = not taken by XNNPACK; sums {within} tolerance",
                 fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
