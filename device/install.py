"""Put the files `edgeq deploy` uploaded into the store, with the store's own atomic code.

Deploy uploads each file to a temp name next to its place (`.NAME.RANDOM.part`), then runs
this module on the device with the system python3 and PYTHONPATH at the agent release it has
just pushed (before any venv, numpy or runtime exists):

    python3 -m edgeq.device.install --home HOME OP ARGS...

    claim                     make HOME edgeq's (store.claim_home: missing, empty, marked or an
                              earlier edgeq's; owned by this user; 0700; marked); {"state"}
    prepare PATH...           claim, create the store's directories, remove `.part` files left
                              by an interrupted deploy; answers {PATH: sha256, or null}
    install TMP FINAL SHA...  check each upload against its sha256, then install it: models and
                              data sets through Store.add_model / add_data, other files
                              (deploy.sh, wheels) renamed into place by atomic_write_file;
                              a damaged upload is removed; answers {"bad": [...]}
    link RELEASE              point HOME/agent at agent-releases/RELEASE in one rename; keep
                              that release and the one before it; answers {"previous": ...}
    deployment SHA [STAMP]    stdin (JSON) becomes deployments/current.json through
                              Store.write_deployment, once its sha256 is SHA and every model
                              and data set it names verifies in the store; then STAMP (JSON:
                              the deploy's settings and deploy.sh's summary) becomes
                              deployments/deploy-stamp.json; answers {"bad": [...]}
    wheels KEEP...            delete the wheels in HOME/wheels not named in KEEP; {"removed"}
    unit TEMPLATE DEST        write the systemd unit TEMPLATE (which names %h/.edgeq) for HOME
                              to DEST atomically, every path escaped for systemd; {"path"}
    check SPEC                read-only: is the deployment SPEC (JSON: what the host would
                              send) already in place and its daemon answering? (`check`);
                              answers {"unchanged": bool, "home", "changed": [why not],
                              "stamp", "daemon"}

Every answer is one JSON line on stdout. An EdgeqError exits 1 with `error: ...` and
`hint: ...` lines on stderr. Paths outside HOME are refused.
Imports: standard library and edgeq.device (errors, fileutil, store; client lazily, for
`check`'s question to the daemon) only.
"""

from __future__ import annotations

import argparse
import json
import os
import posixpath
import shutil
import stat
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from edgeq.device.errors import EdgeqError, IntegrityError, ModelNotFoundError, StoreError
from edgeq.device.fileutil import sha256_bytes, sha256_file
from edgeq.device.store import (
    MODEL_KINDS,
    STORE_MARKER,
    Store,
    atomic_write_bytes,
    atomic_write_file,
    claim_home,
    fsync_dir,
    home_facts,
    home_problem,
)

#: what an upload in flight is called: `.NAME.RANDOM.part` in the directory it goes to
PART_SUFFIX = ".part"


def _sha_or_none(path: str) -> Optional[str]:
    try:
        return sha256_file(path)
    except OSError:
        return None


def _inside(store: Store, path: str) -> str:
    """`path`, if it lies under the store's home; StoreError otherwise."""
    home = store.layout.home
    norm = posixpath.normpath(path)
    if not norm.startswith(home.rstrip("/") + "/"):
        raise StoreError(f"{path} is outside {home}", hint="update edgeq on the host")
    return norm


def prepare(store: Store, paths: Sequence[str]) -> dict[str, Optional[str]]:
    """Make the store's directories and those of `paths`, sweep `.part` leftovers there;
    the sha256 of each of `paths` (None where missing)."""
    lay = store.layout
    claim_home(store.home)
    store.ensure_dirs()
    dirs = {lay.bin_dir, lay.wheels_dir, lay.releases_dir}
    dirs |= {posixpath.dirname(_inside(store, p)) for p in paths}
    dirs |= {lay.models_dir, lay.data_dir, lay.deployments_dir, lay.logs_dir}
    for d in sorted(dirs):
        os.makedirs(d, exist_ok=True)
        for name in os.listdir(d):
            if name.startswith(".") and name.endswith(PART_SUFFIX):
                try:
                    os.unlink(os.path.join(d, name))
                except OSError:
                    pass
    return {p: _sha_or_none(p) for p in paths}


def _drop_damaged(store: Store, final: str, sha256: str) -> None:
    """Remove a stored file whose content no longer matches its name, so it can be re-added
    (the store's add_* keep a file that is already there)."""
    if os.path.exists(final):
        try:
            store.verify_file(Path(final), sha256, "file")
        except IntegrityError:
            os.unlink(final)


def install_one(store: Store, tmp: str, final: str, sha256: str) -> Optional[dict[str, Any]]:
    """Install the upload `tmp` as `final`; None, or what was wrong if its sha256 is not
    `sha256` (the upload is then removed and `final` untouched)."""
    tmp, final = _inside(store, tmp), _inside(store, final)
    got = _sha_or_none(tmp)
    if got != sha256:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        return {"path": final, "got": got, "want": sha256}
    lay = store.layout
    if final in (lay.model(sha256), lay.data(sha256)):
        _drop_damaged(store, final, sha256)
        add = store.add_model if final == lay.model(sha256) else store.add_data
        added = add(tmp)  # re-hashed and copied in atomically under its sha256
        os.unlink(tmp)
        if added != sha256:  # changed between the check and the copy
            return {"path": final, "got": added, "want": sha256}
    else:
        atomic_write_file(final, lambda t: os.replace(tmp, t))
    return None


def install(store: Store, triples: Sequence[str]) -> dict[str, Any]:
    """`install_one` for each (tmp, final, sha256) of `triples`."""
    if len(triples) % 3:
        raise StoreError("install takes TMP FINAL SHA256 triples", hint="update edgeq")
    bad = [install_one(store, *triples[i:i + 3]) for i in range(0, len(triples), 3)]
    return {"bad": [b for b in bad if b is not None]}


def switch_agent(store: Store, release_id: str) -> dict[str, Any]:
    """Point the agent link at `release_id` in one rename; delete all releases but it and
    the previous one (and staging leftovers)."""
    lay = store.layout
    if not release_id or "/" in release_id or not os.path.isdir(lay.release(release_id)):
        raise StoreError(f"agent release {release_id!r} is not on the device",
                         hint="deploy again (edgeq deploy)")
    link = lay.agent
    previous = os.readlink(link) if os.path.islink(link) else None
    if os.path.isdir(link) and not os.path.islink(link):  # a plain directory of an old layout
        os.rename(link, f"{link}.old-{os.getpid()}")
    tmp = f"{link}.tmp-{os.getpid()}"
    os.symlink(posixpath.relpath(lay.release(release_id), lay.home), tmp)
    os.replace(tmp, link)
    fsync_dir(lay.home)
    keep = {release_id, posixpath.basename(previous or "")}
    for name in os.listdir(lay.releases_dir):
        if name not in keep:
            shutil.rmtree(os.path.join(lay.releases_dir, name), ignore_errors=True)
    return {"previous": posixpath.basename(previous) if previous else None}


def write_deployment(store: Store, data: bytes, sha256: str,
                     stamp: Optional[str] = None) -> dict[str, Any]:
    """Write `data` (the deployment JSON) as current.json if it arrived whole and everything
    it names is in the store, then `stamp` (JSON text) as the deploy stamp; else {"bad":
    [what is wrong]} and the old record stays. The stamp goes first to a removed state: a
    record without its stamp never takes `check`'s fast path."""
    if sha256_bytes(data) != sha256:
        return {"bad": [store.layout.current]}
    doc = json.loads(data.decode("utf-8"))
    if not isinstance(doc, dict):
        raise StoreError("the deployment record is not a JSON object", hint="update edgeq")
    named = [(store.model_path(str(doc.get(kind))), str(doc.get(kind))) for kind in MODEL_KINDS]
    if doc.get("eval_data") is not None:
        named.append((store.data_path(str(doc["eval_data"])), str(doc["eval_data"])))
    bad = []
    for path, sha in named:
        try:
            store.verify_file(path, sha, "file")
        except (IntegrityError, ModelNotFoundError):
            bad.append(str(path))
    if not bad:
        stamp_path = store.layout.deploy_stamp
        if os.path.lexists(stamp_path):
            os.unlink(stamp_path)
        store.write_deployment(doc)
        if stamp is not None:
            stamp_doc = json.loads(stamp)
            if not isinstance(stamp_doc, dict):
                raise StoreError("the deploy stamp is not a JSON object", hint="update edgeq")
            atomic_write_bytes(stamp_path, (json.dumps(stamp_doc, indent=2, sort_keys=True)
                                            + "\n").encode("utf-8"))
    return {"bad": bad}


#: how long `check` waits for the daemon's status answer
CHECK_DAEMON_TIMEOUT_S = 5.0


def check(store: Store, spec: dict[str, Any]) -> dict[str, Any]:
    """Is the deployment `spec` describes already in place, so deploy has nothing to do?

    `spec` is what the host would send, with every sha256 computed on the host: "release"
    (the agent release id) and "agent" ({file name: sha256} of its files), "deploy_script"
    (sha256), "current" (the current.json fields the deploy would write, but "deployed_utc",
    with "manifest_sha256" for the manifest) and "settings" (the deploy's options, as the
    stamp records them). Unchanged when: the directory is edgeq's, this user's, marked and
    0700 (nothing for claim_home to do), the agent link points at that release and its files
    hash as given, deploy.sh hashes as given, current.json names the same models, data,
    manifest and release, every model and data set it names re-hashes to its name (a damaged
    file is a change), the deploy stamp belongs to this current.json and has the same
    settings, and the daemon answers its status from that release, interpreter and runtime.
    Reads only; never raises for what it finds (each difference is a line in "changed")."""
    lay = store.layout
    changed: list[str] = []
    facts = home_facts(lay.home)  # what claim_home would change: edgeq's, ours, marked, 0700
    problem = home_problem(facts)
    if problem is not None:
        changed.append(problem.message)
    elif facts["marker_format"] is None:
        changed.append(f"{lay.home} has no {STORE_MARKER} marker")
    elif stat.S_IMODE(os.stat(lay.home).st_mode) != 0o700:
        changed.append(f"{lay.home} is not mode 0700")
    release = str(spec.get("release") or "")
    if os.path.basename(os.readlink(lay.agent) if os.path.islink(lay.agent) else "") != release:
        changed.append(f"the agent link does not point at release {release}")
    pkg = posixpath.join(lay.release(release), "edgeq", "device")
    for name, sha in sorted((spec.get("agent") or {}).items()):
        if _sha_or_none(posixpath.join(pkg, posixpath.basename(name))) != sha:
            changed.append(f"agent file {name} differs")
    if _sha_or_none(lay.deploy_script) != spec.get("deploy_script"):
        changed.append("deploy.sh differs")
    try:
        raw = Path(lay.current).read_bytes()
        current = json.loads(raw.decode("utf-8"))
        stamp = json.loads(Path(lay.deploy_stamp).read_bytes().decode("utf-8"))
    except FileNotFoundError as exc:
        return {"unchanged": False, "home": lay.home, "changed": changed + [f"no {exc.filename}"]}
    except (OSError, ValueError) as exc:
        return {"unchanged": False, "home": lay.home,
                "changed": changed + [f"unreadable record: {exc}"]}
    if not isinstance(current, dict) or not isinstance(stamp, dict):
        return {"unchanged": False, "home": lay.home,
                "changed": changed + ["the record is not a JSON object"]}
    want = dict(spec.get("current") or {})
    have = {k: current.get(k) for k in want if k != "manifest_sha256"}
    have["manifest_sha256"] = sha256_bytes(
        json.dumps(current.get("manifest"), sort_keys=True).encode("utf-8"))
    changed += [f"current.json {k} differs" for k in sorted(want) if have.get(k) != want[k]]
    for kind in (*MODEL_KINDS, "eval_data"):
        sha = current.get(kind)
        if sha is None and kind == "eval_data":
            continue
        path = lay.model(str(sha)) if kind in MODEL_KINDS else lay.data(str(sha))
        got = _sha_or_none(path)
        if got != sha:
            changed.append(f"{kind} {str(sha)[:12]} is " + ("missing" if got is None
                                                            else f"damaged (hashes to {got[:12]})"))
    if stamp.get("current_sha256") != sha256_bytes(raw):
        changed.append("the deploy stamp is not this deployment's")
    if stamp.get("settings") != spec.get("settings"):
        changed.append("the deploy settings differ")
    daemon = _daemon_facts(store)
    script = stamp.get("script") if isinstance(stamp.get("script"), dict) else {}
    if daemon.get("error"):
        changed.append(f"the daemon does not answer ({daemon['error']})")
    else:
        if daemon.get("agent_release") != release:
            changed.append("the daemon runs another agent release")
        if daemon.get("python_executable") != script.get("python_path"):
            changed.append("the daemon runs another interpreter")
        rt = daemon.get("runtime") or {}
        if (rt.get("name"), rt.get("version")) != (script.get("runtime"),
                                                   script.get("runtime_version")):
            changed.append("the daemon has another runtime")
    return {"unchanged": not changed, "home": lay.home, "changed": changed, "stamp": stamp,
            "daemon": daemon}


def _daemon_facts(store: Store) -> dict[str, Any]:
    """What the running daemon says of itself (pid, release, interpreter, runtime), or
    {"error": why it did not answer}."""
    from edgeq.device.client import query_status

    try:
        st = query_status(store.layout.socket, timeout_s=CHECK_DAEMON_TIMEOUT_S)
    except (EdgeqError, OSError) as exc:
        return {"error": getattr(exc, "message", None) or str(exc) or type(exc).__name__}
    return {k: st.get(k) for k in ("pid", "agent_release", "python_executable", "runtime",
                                   "busy")}


def prune_wheels(store: Store, keep: Sequence[str]) -> dict[str, Any]:
    """Delete every `*.whl` in HOME/wheels whose name is not in `keep` (what the current
    deploy pushed); the names removed."""
    wheels = store.layout.wheels_dir
    removed = []
    try:
        names = sorted(os.listdir(wheels))
    except FileNotFoundError:
        return {"removed": []}
    for name in names:
        if name.endswith(".whl") and name not in set(keep):
            try:
                os.unlink(os.path.join(wheels, name))
                removed.append(name)
            except OSError:
                pass
    return {"removed": removed}


#: how the unit template names the device directory (and the interpreter in it)
UNIT_HOME = "%h/.edgeq"


def systemd_escape(text: str) -> str:
    """`text` for the inside of a double-quoted word of a systemd unit line: `%` doubled,
    backslash and `"` escaped (a quoted word keeps spaces, `#`, `;` and `&` literal)."""
    return (text.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
            .replace("\n", "\\n"))


def render_unit(template: str, home: str) -> str:
    """The unit TEMPLATE for device directory `home`: in every double-quoted word of the
    template that names %h/.edgeq (e.g. "PYTHONPATH=%h/.edgeq/agent"), %h/.edgeq becomes
    `home` and the word is escaped for systemd. Plain string operations: no sed."""
    out = []
    for line in template.splitlines(keepends=True):
        parts = line.split('"')
        if len(parts) % 2 == 1:  # balanced quotes: parts[1::2] are the quoted words
            for i in range(1, len(parts), 2):
                if UNIT_HOME in parts[i]:
                    parts[i] = systemd_escape(parts[i].replace(UNIT_HOME, "\0")
                                              ).replace("\0", systemd_escape(home))
        out.append('"'.join(parts))
    return "".join(out)


def write_unit(store: Store, template: str, dest: str) -> dict[str, Any]:
    """Render the unit template file for this store and write it to `dest` atomically."""
    with open(template, encoding="utf-8") as fh:
        text = render_unit(fh.read(), store.layout.home)
    atomic_write_bytes(dest, text.encode("utf-8"))
    return {"path": dest}


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m edgeq.device.install",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--home", required=True, help="the store's directory (absolute)")
    ap.add_argument("op", choices=("claim", "prepare", "install", "link", "deployment",
                                   "wheels", "unit", "check"))
    ap.add_argument("args", nargs="*")
    ns = ap.parse_args(argv)
    try:
        store = Store(ns.home)
        if ns.op == "claim":
            out: dict[str, Any] = claim_home(store.home)
        elif ns.op == "prepare":
            out = prepare(store, ns.args)
        elif ns.op == "wheels":
            out = prune_wheels(store, ns.args)
        elif ns.op == "unit":
            if len(ns.args) != 2:
                raise StoreError("unit takes TEMPLATE DEST", hint="update edgeq")
            out = write_unit(store, ns.args[0], ns.args[1])
        elif ns.op == "install":
            out = install(store, ns.args)
        elif ns.op == "link":
            out = switch_agent(store, ns.args[0] if ns.args else "")
        elif ns.op == "check":
            spec = json.loads(ns.args[0]) if ns.args else None
            if not isinstance(spec, dict):
                raise StoreError("check takes one JSON object", hint="update edgeq")
            out = check(store, spec)
        else:
            out = write_deployment(store, sys.stdin.buffer.read(), ns.args[0] if ns.args else "",
                                   ns.args[1] if len(ns.args) > 1 else None)
    except EdgeqError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"error: {ns.op} failed in {ns.home}: {exc}", file=sys.stderr)
        print("hint: check the device directory's permissions and free space", file=sys.stderr)
        return 1
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
