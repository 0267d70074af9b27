"""The settings matrix: lists expand into cells checked by the one settings declaration; the
order per board is random, recorded by its seed, and every cell runs exactly once."""
from __future__ import annotations

import pytest
from edgeq.device.errors import UsageError
from edgeq.host.matrix import Cell, Matrix, new_seed


def test_lists_expand_into_every_cell() -> None:
    m = Matrix.parse(threads="1,2,4", xnnpack="on,off", runtime="litert,tflite-runtime")
    assert len(m.cells) == 12 and len(set(m.cells)) == 12
    assert m.to_dict() == {"threads": [1, 2, 4], "xnnpack": [True, False],
                           "runtime": ["ai-edge-litert", "tflite-runtime"]}
    assert Matrix.from_dict(m.to_dict()) == m
    assert Matrix.parse().cells == [Cell(1, True, None)]  # the defaults: one cell, as today


@pytest.mark.parametrize("kwargs, words", [
    ({"threads": "1,0"}, "--threads 0 is not an integer in [1, 256]"),
    ({"threads": "1,x"}, "--threads 'x' is not an integer"),
    ({"threads": "1,,2"}, "empty value"),
    ({"threads": "2,2"}, "repeats"),
    ({"xnnpack": "on,maybe"}, "--xnnpack 'maybe' is not on or off"),
    ({"xnnpack": "on,true"}, "repeats"),
    ({"runtime": "litert,onnx"}, "--runtime 'onnx' is not one of ai-edge-litert"),
])
def test_bad_values_are_refused_by_the_declaration(kwargs: dict, words: str) -> None:
    with pytest.raises(UsageError) as info:
        Matrix.parse(**kwargs)
    assert words in info.value.message


def test_order_is_seeded_per_board_and_runs_every_cell_once() -> None:
    m = Matrix.parse(threads="1,2,4", xnnpack="on,off")
    a = m.order(7, "pi4a")
    assert sorted(a, key=repr) == sorted(m.cells, key=repr)  # every cell exactly once
    assert m.order(7, "pi4a") == a  # same seed and board: same order again
    seeds = [m.order(s, "pi4a") for s in range(20)]
    assert len({tuple(o) for o in seeds}) > 10  # seeds change the order (6! orders)
    boards = [m.order(7, f"pi{i}") for i in range(20)]
    assert len({tuple(o) for o in boards}) > 10  # boards do not share one order
    assert seeds[0] != m.cells or seeds[1] != m.cells  # not simply the given order


def test_new_seeds_differ() -> None:
    assert len({new_seed() for _ in range(50)}) > 45


def test_no_xnnpack_is_xnnpack_off() -> None:
    assert Matrix.parse(no_xnnpack=True).cells == [Cell(1, False, None)]
    with pytest.raises(UsageError, match="both given"):
        Matrix.parse(xnnpack="on", no_xnnpack=True)
