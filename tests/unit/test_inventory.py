"""Ansible inventories (INI and YAML, real files) read with ansible-core's own parser:
groups, group and host vars, --limit patterns, and one-line errors for bad files."""
from __future__ import annotations

from pathlib import Path

import pytest
from edgeq.host.inventory import InventoryError, Target, from_hosts, load_inventory, merge, select

pytest.importorskip("ansible", reason="ansible-core is the lab extra (in dev)")

INI = """\
[pi4]
pi4a ansible_host=10.0.0.5 ansible_user=pi
pi4b ansible_host=10.0.0.6 ansible_port=2222 edgeq_device_dir=/opt/edgeq

[pi3]
pi3a ansible_host=10.0.0.7

[lab:children]
pi4
pi3

[lab:vars]
ansible_user=lab
ansible_ssh_private_key_file=~/.ssh/lab_key

[here]
laptop ansible_connection=local edgeq_device_dir=/tmp/edgeq-laptop
"""

YAML = """\
all:
  children:
    pi5:
      hosts:
        pi5a: {ansible_host: "fd00::5", ansible_port: 2200}
      vars:
        edgeq_device_dir: /srv/edgeq
    rk:
      hosts:
        rock:
          ansible_host: 192.0.2.9
          ansible_user: radxa
          ansible_ssh_private_key_file: /keys/rock
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_ini_groups_and_vars(tmp_path: Path) -> None:
    targets = {t.name: t for t in load_inventory(_write(tmp_path, "hosts.ini", INI))}
    assert set(targets) == {"pi4a", "pi4b", "pi3a", "laptop"}
    a, b, c = targets["pi4a"], targets["pi4b"], targets["pi3a"]
    assert (a.host, a.user, a.port) == ("10.0.0.5", "pi", None)  # host var beats group var
    assert (b.user, b.port, b.device_dir) == ("lab", 2222, "/opt/edgeq")
    assert c.user == "lab" and c.key_file == Path("~/.ssh/lab_key").expanduser()
    assert set(a.groups) == {"pi4", "lab"} and set(c.groups) == {"pi3", "lab"}
    assert (a.spec, b.spec, c.spec) == ("pi@10.0.0.5", "lab@10.0.0.6:2222", "lab@10.0.0.7")
    laptop = targets["laptop"]
    assert laptop.spec == "local" and laptop.device_dir == "/tmp/edgeq-laptop"
    assert laptop.key_file is None


def test_yaml_inventory(tmp_path: Path) -> None:
    targets = {t.name: t for t in load_inventory(_write(tmp_path, "hosts.yml", YAML))}
    assert targets["pi5a"].spec == "[fd00::5]:2200"
    assert targets["pi5a"].device_dir == "/srv/edgeq" and targets["pi5a"].groups == ("pi5",)
    rock = targets["rock"]
    assert rock.spec == "radxa@192.0.2.9" and rock.key_file == Path("/keys/rock")


@pytest.mark.parametrize("pattern, names", [
    ("pi4", ["pi4a", "pi4b"]),
    ("pi3a", ["pi3a"]),
    ("pi3:laptop", ["pi3a", "laptop"]),
    ("lab:!pi4b", ["pi4a", "pi3a"]),
    ("pi4:&lab", ["pi4a", "pi4b"]),
    ("pi*", ["pi4a", "pi4b", "pi3a"]),
    ("", ["pi4a", "pi4b", "pi3a", "laptop"]),
])
def test_limit_patterns(tmp_path: Path, pattern: str, names: list[str]) -> None:
    targets = load_inventory(_write(tmp_path, "hosts.ini", INI))
    assert sorted(t.name for t in select(targets, pattern)) == sorted(names)


def test_limit_that_matches_nothing_is_one_line(tmp_path: Path) -> None:
    targets = load_inventory(_write(tmp_path, "hosts.ini", INI))
    with pytest.raises(InventoryError) as info:
        select(targets, "pi9")
    assert "'pi9' matches none of the 4 board(s)" in info.value.message
    assert "pi4" in info.value.hint and "\n" not in info.value.message


@pytest.mark.parametrize("text, words", [
    ("[pi4\nbroken", "Failed to parse"),
    ("all:\n  hosts: [1, 2\n", "hosts.bad"),
])
def test_bad_file_is_a_one_line_error(tmp_path: Path, capfd: pytest.CaptureFixture,
                                      text: str, words: str) -> None:
    path = _write(tmp_path, "hosts.bad", text)
    with pytest.raises(InventoryError) as info:
        load_inventory(path)
    assert words in info.value.message and "\n" not in info.value.message
    assert "ansible-inventory" in info.value.hint
    out, err = capfd.readouterr()
    assert "WARNING" not in out + err  # ansible's own warnings are not printed


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match="does not exist"):
        load_inventory(tmp_path / "nope.ini")
    with pytest.raises(InventoryError, match="lists no hosts"):
        load_inventory(_write(tmp_path, "empty.ini", "[boards]\n"))


def test_templates_are_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, "t.ini", "[b]\npi ansible_host='{{ lookup(\"env\", \"X\") }}'\n")
    with pytest.raises(InventoryError, match="template"):
        load_inventory(path)


def test_same_board_twice_is_refused_and_repeats_merge() -> None:
    a = Target("a", "10.0.0.5", port=22, device_dir="/d")
    assert merge([a, a], "~/.edgeq") == [a]
    with pytest.raises(InventoryError, match="a and b are the same board"):
        merge([a, Target("b", "10.0.0.5", device_dir="/d")], "~/.edgeq")
    # another device dir on the same machine is another board
    two = merge([Target("l1", "local", device_dir="/x"), Target("l2", "local", device_dir="/y")],
                "~/.edgeq")
    assert [t.name for t in two] == ["l1", "l2"]


def test_repeated_hosts_stay_as_given() -> None:
    targets = from_hosts(["local", "pi@pi.local:2222", "edgeq-test"])
    assert [t.spec for t in targets] == ["local", "pi@pi.local:2222", "edgeq-test"]


def test_without_ansible_core_inventory_is_one_line_with_the_pip_command(tmp_path: Path
                                                                          ) -> None:
    import subprocess
    import sys

    path = _write(tmp_path, "hosts.ini", INI)
    code = ("import sys\nsys.modules['ansible'] = None  # as if ansible-core were not installed\n"
            "from edgeq.host.cli import main\n"
            f"main(['bench-remote', '--inventory', {str(path)!r}])\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 2
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert lines[0].startswith("error: --inventory and --limit need ansible-core")
    assert "pip install 'edgeq[lab]'" in res.stderr and "Traceback" not in res.stderr
