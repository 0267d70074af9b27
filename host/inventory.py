"""Boards to work on: `--host` values and Ansible inventories, as `Target`s.

A lab already keeps its boards in an Ansible inventory (INI or YAML, with groups and
group/host vars); edgeq reads that file with ansible-core's own parser (InventoryManager +
DataLoader + VariableManager, so group vars, `children`, `group_vars/` and `host_vars/` next
to the file behave exactly as in Ansible) instead of a second parser. ansible-core is the
optional `lab` extra: without it `--inventory` is a one-line error with the pip command.
Only the static `yaml`, `ini` and `toml` inventory plugins are enabled while reading: an
executable inventory script is not run.

Variables read per host: `ansible_host`, `ansible_user`, `ansible_port`,
`ansible_ssh_private_key_file` (the identity file of that board's SSH login),
`ansible_connection=local` (this machine, no SSH) and `edgeq_device_dir`. Host keys are
checked for every board as for `--host`: each Target is opened through edgeq.host.link.

`select(targets, limit)` applies an Ansible host pattern (`group`, `host`, `a:b`, `a:!b`,
`a:&b`, `pi*`) with ansible-core's own pattern matching. `merge(...)` joins `--host` and
inventory targets and refuses two names for one board (same host, port and device dir).
Imports: standard library and edgeq.device.errors; ansible-core lazily.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

from edgeq.device.errors import UsageError

__all__ = ["Target", "InventoryError", "load_inventory", "select", "merge", "from_hosts",
           "board_targets", "PIP_HINT"]

PIP_HINT = "pip install 'edgeq[lab]' (or: pip install 'ansible-core>=2.15')"
#: the inventory plugins enabled while reading a file (static formats only: no scripts)
_PLUGINS = ("yaml", "ini", "toml")
_LOCAL = "local"


class InventoryError(UsageError):
    """An inventory file that cannot be read, or a --limit that selects nothing."""


@dataclass(frozen=True)
class Target:
    """One board: its inventory name, how to reach it and where edgeq lives on it."""

    name: str
    host: str
    user: Optional[str] = None
    port: Optional[int] = None
    key_file: Optional[Path] = None
    device_dir: Optional[str] = None
    groups: tuple[str, ...] = ()

    @property
    def spec(self) -> str:
        """The `user@host:port` string edgeq.host.link takes (`local` for this machine)."""
        if self.host == _LOCAL:
            return _LOCAL
        host = f"[{self.host}]" if ":" in self.host and self.port is not None else self.host
        return (f"{self.user}@" if self.user else "") + host + \
            (f":{self.port}" if self.port is not None else "")

    def board_key(self, default_device_dir: str) -> tuple[str, int, str]:
        """What makes two entries the same board: host, port (22 by default), device dir."""
        host = self.host.rpartition("@")[2] if self.user is None else self.host
        return (host, self.port or 22, self.device_dir or default_device_dir)


def from_hosts(hosts: Sequence[str]) -> list[Target]:
    """Targets for `--host` values, as given (an ssh alias or user@host:port stays as it is)."""
    return [Target(name=h, host=h) for h in hosts]


def _ansible() -> tuple[Any, Any, Any]:
    try:
        from ansible.inventory.manager import InventoryManager
        from ansible.parsing.dataloader import DataLoader
        from ansible.vars.manager import VariableManager
    except ImportError:
        raise InventoryError("--inventory and --limit need ansible-core's inventory parser, "
                             "which is not installed", hint=PIP_HINT) from None
    return InventoryManager, DataLoader, VariableManager


class _Warnings:
    """Stands in for ansible's Display inside the inventory manager: keeps the parse
    failures (for a one-line error) instead of printing them."""

    def __init__(self) -> None:
        self.failures: list[str] = []

    def error_as_warning(self, msg: str, exception: BaseException, **_: Any) -> None:
        self.failures.append(_first_line(getattr(exception, "message", None) or exception))

    def warning(self, msg: str, *_: Any, **__: Any) -> None:
        self.failures.append(_first_line(msg))

    def __getattr__(self, name: str) -> Any:  # debug, vvv, vvvv...: nothing to show
        return lambda *args, **kwargs: None


def _first_line(text: object) -> str:
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    return lines[0] if lines else ""


@contextmanager
def _reading() -> Iterator[_Warnings]:
    """ansible-core set up to read one static file: only _PLUGINS, a failure raises, its
    warnings collected instead of printed."""
    import ansible.constants as C
    import ansible.inventory.manager as manager

    saved = (C.INVENTORY_ENABLED, C.INVENTORY_ANY_UNPARSED_IS_FAILED, manager.display)
    collected = _Warnings()
    C.INVENTORY_ENABLED, C.INVENTORY_ANY_UNPARSED_IS_FAILED = list(_PLUGINS), True
    manager.display = collected
    try:
        yield collected
    finally:
        C.INVENTORY_ENABLED, C.INVENTORY_ANY_UNPARSED_IS_FAILED, manager.display = saved


def _plain(name: str, value: Any, where: str) -> Optional[str]:
    """A variable's value as a plain string; templates are not evaluated (an error)."""
    if value is None:
        return None
    text = str(value)
    if "{{" in text or "{%" in text:
        raise InventoryError(f"{where}: {name} is a template ({text!r}); edgeq does not "
                             "evaluate Jinja templates", hint=f"give {name} a plain value")
    return text


def _target(name: str, hostvars: dict[str, Any], groups: Sequence[str], where: str) -> Target:
    get = lambda key: _plain(key, hostvars.get(key), where)  # noqa: E731
    port_text = get("ansible_port")
    port = None
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise InventoryError(f"{where}: ansible_port {port_text!r} is not a port (1-65535)",
                                 hint="fix ansible_port in the inventory")
        port = int(port_text)
    key = get("ansible_ssh_private_key_file") or get("ansible_private_key_file")
    local = get("ansible_connection") == "local"
    return Target(
        name=name,
        host=_LOCAL if local else (get("ansible_host") or name),
        user=None if local else get("ansible_user"),
        port=None if local else port,
        key_file=None if local or key is None else Path(key).expanduser(),
        device_dir=get("edgeq_device_dir"),
        groups=tuple(g for g in groups if g not in ("all", "ungrouped")),
    )


def load_inventory(path: Union[str, Path]) -> list[Target]:
    """Every host of an Ansible inventory file (INI, YAML or TOML), in the file's order."""
    source = Path(path).expanduser()
    if not source.is_file():
        raise InventoryError(f"inventory {source} does not exist or is not a file",
                             hint="pass an Ansible inventory file (INI or YAML) to --inventory")
    InventoryManager, DataLoader, VariableManager = _ansible()
    from ansible.errors import AnsibleError

    loader = DataLoader()
    with _reading() as warnings:
        try:
            inventory = InventoryManager(loader=loader, sources=[str(source)])
            variables = VariableManager(loader=loader, inventory=inventory)
            hosts = [(h.name, variables.get_vars(host=h, include_hostvars=False),
                      [g.name for g in h.get_groups()]) for h in inventory.get_hosts()]
        except AnsibleError as exc:
            reason = next((w for w in warnings.failures if w), "") or _first_line(exc)
            raise InventoryError(f"cannot read inventory {source}: {reason}",
                                 hint="check it with: ansible-inventory -i FILE --list") from None
    if not hosts:
        raise InventoryError(f"inventory {source} lists no hosts",
                             hint="add the boards under a group, e.g. [boards] pi4 "
                                  "ansible_host=10.0.0.5")
    return [_target(name, hv, groups, f"inventory {source}, host {name}")
            for name, hv, groups in hosts]


def select(targets: Sequence[Target], limit: Optional[str]) -> list[Target]:
    """The targets an Ansible host pattern (`--limit`) picks, in their order; all when
    `limit` is empty. InventoryError when it picks none."""
    if not limit:
        return list(targets)
    InventoryManager, DataLoader, _ = _ansible()
    with _reading():
        inventory = InventoryManager(loader=DataLoader(), sources=[])
        for t in targets:
            for group in t.groups:
                inventory.add_group(group)
            inventory.add_host(t.name, group=t.groups[0] if t.groups else None)
            for group in t.groups[1:]:
                inventory._inventory.add_child(group, t.name)
        inventory.reconcile_inventory()  # fills `all`/`ungrouped`, as after parsing a file
        inventory.subset(limit)
        picked = {h.name for h in inventory.get_hosts()}
    chosen = [t for t in targets if t.name in picked]
    if not chosen:
        groups = sorted({g for t in targets for g in t.groups})
        raise InventoryError(
            f"--limit {limit!r} matches none of the {len(targets)} board(s)",
            hint=f"use a group ({', '.join(groups) or 'none'}) or a host name "
                 f"({', '.join(t.name for t in targets[:6])})")
    return chosen


def merge(targets: Sequence[Target], default_device_dir: str) -> list[Target]:
    """`targets` without repeats; InventoryError when two names are the same board (same
    host, port and device dir: the fleet would run two jobs on one board at once)."""
    seen: dict[tuple[str, int, str], Target] = {}
    out = []
    for t in targets:
        key = t.board_key(default_device_dir)
        other = seen.get(key)
        if other is None:
            seen[key] = t
            out.append(t)
        elif other.name != t.name:
            raise InventoryError(
                f"{other.name} and {t.name} are the same board ({key[0]}:{key[1]} {key[2]})",
                hint="give each board its own entry, or a different edgeq_device_dir")
    return out


def board_targets(hosts: Optional[Sequence[str]], inventory: Optional[Union[str, Path]],
                  limit: Optional[str], default_device_dir: str) -> list[Target]:
    """The boards of a command: its `--host` values and its `--inventory`'s hosts (the
    union), narrowed by `--limit`, each board once."""
    targets = from_hosts(hosts or [])
    if inventory is not None:
        targets += load_inventory(inventory)
    if not targets:
        raise UsageError("no board given", hint="pass --host HOST (repeatable) or "
                                                "--inventory FILE")
    return merge(select(targets, limit), default_device_dir)
