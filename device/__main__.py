"""The agent's command line: `python -m edgeq.device` (the `edgeq-agent` script).

    python -m edgeq.device [--home DIR] bench MODEL.tflite [--data EVAL.npz] [--json] ...
    python -m edgeq.device [--home DIR] evaluate MODEL.tflite --data EVAL.npz [--json]
    python -m edgeq.device [--home DIR] serve [--detach] [--socket PATH]
    python -m edgeq.device [--home DIR] stop | status [--json] | bridge [--socket PATH]
    python -m edgeq.device runtime            (which TFLite runtime is used)
    python -m edgeq.device profile PLAN.json [--threads N] [--no-xnnpack] [--json]
                                              (time the cut models of a profile plan:
                                               edgeq.device.profile)

argparse only (no third-party CLI library on the board). Errors are one line on stderr,
`error: MESSAGE / hint: HINT`, and a non-zero exit (2 for usage errors); with --json the
error is also printed on stdout as {"error": {"type", "message", "hint"}}.
Imports: standard library and edgeq.device (heavier modules lazily, per command).
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import sys
from typing import Any, Callable, Iterator, NoReturn, Optional, Sequence

from edgeq.device import __version__
from edgeq.device.errors import EdgeqError, UsageError
from edgeq.device.settings import SETTINGS, BenchSettings, Setting

logger = logging.getLogger("edgeq.device")


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of exiting, so --json errors stay JSON."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message, hint=f"see {self.prog} --help")


def _nonneg_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (v >= 0 and v != float("inf")):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number >= 0")
    return v


def _setting_type(s: Setting) -> Callable[[str], Any]:
    """An argparse `type` that parses and checks one declared setting."""

    def parse(text: str) -> Any:
        try:
            return s.parse_text(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def add_setting_flags(p: argparse.ArgumentParser, *, timing: bool) -> None:
    """One flag per declared bench setting (edgeq.device.settings); the `timing` ones only
    when `timing`. A bool gets --FLAG / --no-FLAG."""
    for s in SETTINGS:
        if s.timing and not timing:
            continue
        if s.type is bool:
            p.add_argument(s.flag, dest=s.name, action="store_true", default=s.default,
                           help=s.help + (" (the default)" if s.default else ""))
            p.add_argument("--no-" + s.flag[2:], dest=s.name, action="store_false",
                           help=s.off_help + (" (the default)" if not s.default else ""))
        elif s.choices is not None:
            p.add_argument(s.flag, dest=s.name, choices=s.choices, default=s.default,
                           help=s.help)
        else:
            shown = "" if s.default is None else f" (default {s.default})"
            p.add_argument(s.flag, dest=s.name, type=_setting_type(s), default=s.default,
                           help=s.help + shown)


def _add_measure_args(p: argparse.ArgumentParser, *, timing: bool) -> None:
    p.add_argument("model", help="the .tflite model file")
    add_setting_flags(p, timing=timing)
    p.add_argument("--sha256", default=None, help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true", help="print one JSON document")
    if timing:
        p.add_argument("--data", default=None, help="evaluation set .npz (images, labels)")
    else:
        p.add_argument("--data", required=True, help="evaluation set .npz (images, labels)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m edgeq.device",
                     description="edgeq on-device agent: benchmark TFLite models, serve a daemon.")
    parser.add_argument("--version", action="version", version=f"edgeq-agent {__version__}")
    parser.add_argument("--home", default=None,
                        help="the edgeq directory (default $EDGEQ_HOME or ~/.edgeq)")
    parser.add_argument("--log-level", default="WARNING",
                        choices=("DEBUG", "INFO", "WARNING", "ERROR"), help="logging level")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("bench", help="benchmark one model in this process and print the result")
    _add_measure_args(p, timing=True)

    p = sub.add_parser("evaluate", help="accuracy of one model on an evaluation set")
    _add_measure_args(p, timing=False)

    p = sub.add_parser("profile", help="time the cut models of a profile plan (per-layer "
                       "timing; the host's edgeq profile writes the plan)")
    p.add_argument("plan", help="the edgeq.profile_plan/1 JSON file")
    add_setting_flags(p, timing=False)  # batch_size / eval_limit are accepted and unused
    p.add_argument("--json", action="store_true", help="print one JSON document")

    p = sub.add_parser("serve", help="run the daemon on a Unix socket")
    p.add_argument("--detach", action="store_true",
                   help="run in the background (log to $EDGEQ_HOME/logs/agent.log)")
    p.add_argument("--socket", default=None, help="socket path (default $EDGEQ_HOME/agent.sock)")
    p.add_argument("--worker-timeout-s", type=_nonneg_float, default=None,
                   help="upper bound on any worker's run time (default: per request)")
    p.add_argument("--max-clients", type=int, default=None,
                   help="connections served at once; more are refused (default 16)")
    p.add_argument("--hello-timeout-s", type=_nonneg_float, default=None,
                   help="a connection that does not say hello in time is closed (default 10)")

    p = sub.add_parser("stop", help="stop the daemon (by its pidfile)")
    p.add_argument("--timeout-s", type=_nonneg_float, default=10.0,
                   help="seconds to wait for it to exit")

    p = sub.add_parser("status", help="ask the daemon for its status")
    p.add_argument("--socket", default=None, help="socket path (default $EDGEQ_HOME/agent.sock)")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("bridge", help="relay stdin/stdout to the daemon's socket (for SSH)")
    p.add_argument("--socket", default=None, help="socket path (default $EDGEQ_HOME/agent.sock)")

    p = sub.add_parser("runtime", help="show which TFLite runtime would be used")
    p.add_argument("--json", action="store_true", help="print JSON")
    # --home is accepted after the command too (`bench --home DIR ...`)
    for subparser in sub.choices.values():
        subparser.add_argument("--home", default=argparse.SUPPRESS,
                               help="the edgeq directory (default $EDGEQ_HOME or ~/.edgeq)")
    return parser


def settings_from_args(args: argparse.Namespace) -> BenchSettings:
    """The BenchSettings a parsed bench/evaluate command line asks for (the fields it has no
    flag for keep their defaults)."""
    return BenchSettings.from_dict(vars(args), strict=False)


def _print_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, separators=(",", ":"), allow_nan=False) + "\n")
    sys.stdout.flush()


def _fmt(v: Any, fmt: str = ".3f") -> str:
    return "-" if v is None else format(v, fmt)


def _summary(doc: dict[str, Any]) -> str:
    m, t, mem, rt = doc["model"], doc.get("timing") or {}, doc.get("memory") or {}, \
        doc.get("runtime") or {}
    env = doc.get("environment") or {}
    lines = [
        f"model     {m['path']}  ({m['size_bytes']} bytes, sha256 {m['sha256'][:12]})",
        f"input     {m['input']['dtype']} {m['input']['shape']}  "
        f"scale {m['input']['scale']:g} zero_point {m['input']['zero_point']}",
        f"runtime   {rt.get('name')} {rt.get('version')}  op resolver {rt.get('op_resolver')}  "
        f"XNNPACK {'on' if doc['settings']['xnnpack'] else 'off'} "
        f"({rt.get('delegated_nodes')} of {rt.get('total_nodes')} nodes delegated)  "
        f"threads {doc['settings']['threads']}",
        f"machine   {env.get('machine')}  {env.get('cpu_model')}  "
        f"{'EMULATED (' + str(env.get('emulator')) + ')' if env.get('emulated') else 'native'}",
    ]
    if t:
        lines += [
            f"load      {_fmt(t.get('load_ms'))} ms  init {_fmt(t.get('init_ms'))} ms  "
            f"first inference {_fmt(t.get('first_inference_ms'))} ms",
            f"latency   p50 {_fmt(t.get('latency_ms_p50'))} ms  p90 "
            f"{_fmt(t.get('latency_ms_p90'))}  p99 {_fmt(t.get('latency_ms_p99'))}  "
            f"min {_fmt(t.get('latency_ms_min'))}  mean {_fmt(t.get('latency_ms_mean'))} "
            f"± {_fmt(t.get('latency_ms_std'))}  ({t.get('runs')} runs in "
            f"{_fmt(t.get('timed_s'), '.2f')} s after {t.get('warmup_runs')} warm-up)",
            f"throughput {_fmt(t.get('throughput_samples_per_s'), '.1f')} samples/s "
            f"at batch {t.get('throughput_batch_size')}",
        ]
    if mem.get("peak_rss_bytes") is not None:
        mib = 1024 * 1024
        lines.append(
            f"memory    peak RSS {mem['peak_rss_bytes'] / mib:.1f} MiB"
            + (f"  growth load {(mem.get('rss_growth_bytes_load') or 0) / mib:.2f} / "
               f"allocate {(mem.get('rss_growth_bytes_allocate') or 0) / mib:.2f} / "
               f"invoke {(mem.get('rss_growth_bytes_invoke') or 0) / mib:.2f} MiB"
               if "rss_growth_bytes_load" in mem else ""))
    acc = doc.get("accuracy")
    if acc:
        lines.append(f"accuracy  top-1 {acc['top1']:.4f} ({acc['correct']}/{acc['count']})")
    return "\n".join(lines)


@contextlib.contextmanager
def _measured_file(model: str, expected: Optional[str]) -> Iterator[Optional[str]]:
    """The sha256 of the file a measurement loads. With `--sha256` (the daemon, which has
    verified the store file) the file is opened once and hashed through that descriptor;
    when the measurement is done the path must still be that same file (device and inode),
    else IntegrityError. So the sha256 reported is the one of the bytes measured, not the one
    the daemon asked for, and the daemon's "measured X instead of Y" check means something.
    Without `--sha256`, bench hashes the file itself as usual."""
    if expected is None:
        yield None
        return
    from edgeq.device.errors import IntegrityError
    from edgeq.device.runtime import check_tflite_file

    check_tflite_file(model)  # clear errors (missing, garbage) under the file's own name
    with open(model, "rb") as fh:
        h = hashlib.sha256()
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
        before = os.fstat(fh.fileno())
        yield h.hexdigest()
        try:
            after = os.stat(model)
        except OSError:
            after = None
        if after is None or (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino):
            raise IntegrityError(f"{model} was replaced while it was being measured",
                                 hint="run the measurement again")


def _run(args: argparse.Namespace) -> int:
    cmd = args.command
    if cmd in ("bench", "evaluate"):
        from edgeq.device.bench import run_benchmark, run_evaluation

        settings = settings_from_args(args)
        run = run_benchmark if cmd == "bench" else run_evaluation
        with _measured_file(args.model, args.sha256) as sha256:
            doc = run(args.model, data_path=args.data, settings=settings, sha256=sha256)
        if args.json:
            _print_json(doc)
        else:
            print(_summary(doc))
        return 0
    if cmd == "profile":
        from edgeq.device.profile import read_plan, run_profile

        doc = run_profile(read_plan(args.plan), settings_from_args(args))
        if args.json:
            _print_json(doc)
        else:
            for m in doc["models"]:
                print(f"{m['sha256'][:12]}  p50 {m['latency_ms_p50']:.4f} ms  "
                      f"delegated {m['delegated_nodes']}/{m['total_nodes']}")
        return 0
    if cmd == "runtime":
        from edgeq.device.runtime import detect_runtime

        info = detect_runtime()
        if args.json:
            _print_json(info.to_dict())
        else:
            print(f"{info.name} {info.version}")
        return 0
    from edgeq.device import daemon

    if cmd == "serve":
        limits = {k: v for k, v in (("max_clients", args.max_clients),
                                    ("hello_timeout_s", args.hello_timeout_s)) if v is not None}
        code = daemon.serve(home=args.home, socket_path=args.socket, detach=args.detach,
                            worker_timeout_s=args.worker_timeout_s, **limits)
        if args.detach:
            print(f"edgeq agent started (pid {code})")
            return 0
        return code
    if cmd == "stop":
        pid = daemon.stop(home=args.home, timeout_s=args.timeout_s)
        print(f"edgeq agent (pid {pid}) stopped")
        return 0
    if cmd == "status":
        from edgeq.device.client import query_status
        from edgeq.device.store import Store

        doc = query_status(args.socket or Store(args.home).socket_path)
        if args.json:
            _print_json(doc)
        else:
            print(daemon.format_status(doc))
        return 0
    if cmd == "bridge":
        return daemon.bridge(home=args.home, socket_path=args.socket)
    raise UsageError(f"unknown command {cmd!r}", hint="see --help")  # pragma: no cover


def _report_error(exc: EdgeqError, want_json: bool) -> None:
    line = f"error: {exc.message}"
    if exc.hint:
        line += f" / hint: {exc.hint}"
    sys.stderr.write(" ".join(line.split()) + "\n")
    sys.stderr.flush()
    if want_json:
        try:
            _print_json({"error": exc.to_dict()})
        except (OSError, ValueError):
            pass


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point; returns the exit code (0 ok, 1 failure, 2 usage, 130 interrupted)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    want_json = "--json" in argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        args = build_parser().parse_args(argv)
        logging.basicConfig(level=getattr(logging, args.log_level),
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        return _run(args)
    except EdgeqError as exc:
        _report_error(exc, want_json)
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
