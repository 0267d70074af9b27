"""Make an `edgeq.compare/1` run document from the real one-shot device agent, without SSH.

Used to produce this example before `edgeq bench-remote --host local` could run end to end:
it runs `python -m edgeq.device bench MODEL --data eval.npz --json` (the same one-shot agent
bench-remote runs on a board) for float32 and int8, alternated in rounds (ABBA...), and merges
the results with edgeq.host.compare.build_compare, exactly as bench-remote does.

    python docs/report-example/assemble_run.py ARTIFACTS_DIR RUN.json [--rounds 2]
    edgeq report --result RUN.json --artifacts ARTIFACTS_DIR --out docs/report-example
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from edgeq.host.compare import build_compare


def agent(model: Path, data: Path | None, threads: int) -> dict:
    argv = [sys.executable, "-m", "edgeq.device", "bench", str(model), "--json",
            "--threads", str(threads)]
    if data is not None:
        argv += ["--data", str(data)]
    out = subprocess.run(argv, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifacts", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    manifest = json.loads((args.artifacts / "manifest.json").read_text())
    files = {k: args.artifacts / manifest["models"][k]["file"] for k in ("float32", "int8")}
    rounds: dict[str, list[dict]] = {"float32": [], "int8": []}
    for r in range(args.rounds):
        order = ("float32", "int8") if r % 2 == 0 else ("int8", "float32")
        for kind in order:
            data = args.artifacts / "eval.npz" if not rounds[kind] else None  # evaluate once
            rounds[kind].append(agent(files[kind], data, args.threads))
            print(f"round {r}: {kind} done", file=sys.stderr)
    doc = build_compare(rounds["float32"], rounds["int8"], host="local (one-shot agent)",
                        settings={"threads": args.threads, "xnnpack": True,
                                  "order": "interleaved", "rounds": args.rounds,
                                  "path": "one-shot"},
                        time_utc=rounds["float32"][0]["time_utc"],
                        artifacts_dir=str(args.artifacts.resolve()))
    args.out.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
