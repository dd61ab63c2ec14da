"""The request layer's JSON and tensor decoding: the quick paths give what the careful ones give.

`parsing.loads` first lets json's C parser read the numbers and keeps its value only when no
number in it is one the careful parse (a Python call per number) would refuse; `decode_inputs`
checks a flat list of JSON numbers in one pass. Both must agree with the item-by-item rules
on every input, refusals and their messages included.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from maaslab.errors import MaaslabError
from maaslab.serve.parsing import BadBody, _careful_loads, loads
from maaslab.serve.tensors import decode_inputs

ACCEPTED = [
    '{"inputs": [{"name": "x", "data": [0.0, 1.5, -2, 16, 3e2, 1E-5]}]}',
    '{"data": [[1, 2.5], [3, 4]], "n": 7, "f": -0.25}',
    "[1e25, -1e25, 1e308, 4.9e-324, 1e-400]",  # large floats, underflow to 0.0: all finite
    "[99999999999999999999, -99999999999999999999, 12345678901234567890]",  # 20 digits
    '[100000000000000000000.5, {"a": 1e20}, [2e19, 5]]',  # 1e20 and over: careful path
    '{"s": "text", "b": [true, false, null], "mixed": [1, "a", 2.0, [3]]}',
    "[]",
    "3",
    '"just a string"',
    '{"deep": [[[[1.0]]]], "e": {}}',
]


@pytest.mark.parametrize("text", ACCEPTED)
def test_the_quick_parse_gives_the_careful_parse_value(text):
    quick, careful = loads(text), _careful_loads(text, "the request body")
    assert quick == careful
    assert json.dumps(quick) == json.dumps(careful)  # ints stay ints, floats floats
    assert loads(text.encode()) == careful


REFUSED = [
    ("[1, 123456789012345678901]", "a 21-digit integer is too large"),
    ('{"a": -123456789012345678901234}', "a 24-digit integer is too large"),
    ("[0.5, 1e400]", "the number 1e400 is too large for a 64-bit float"),
    ('{"x": [[1, 2], [3, -1e999]]}', "the number -1e999 is too large"),
    ("[1, NaN]", "NaN is not a JSON number"),
    ('{"v": Infinity}', "Infinity is not a JSON number"),
    ("[-Infinity]", "-Infinity is not a JSON number"),
    ("[" + "9" * 5000 + "]", "a 5000-digit integer is too large"),
    ("[1, 2,]", "is not valid JSON"),
    ('{"a": 1', "is not valid JSON"),
]


@pytest.mark.parametrize(("text", "words"), REFUSED)
def test_numbers_the_careful_parse_refuses_are_refused_with_its_message(text, words):
    with pytest.raises(BadBody) as quick:
        loads(text)
    with pytest.raises(BadBody) as careful:
        _careful_loads(text, "the request body")
    assert words in str(quick.value)
    assert str(quick.value) == str(careful.value)


def _decode(data, datatype="FP32", shape=(2, 2)):
    request = {"inputs": [{"name": "x", "datatype": datatype, "shape": list(shape), "data": data}]}
    return decode_inputs(request, b"")["x"]


@pytest.mark.parametrize("data", [[1, 2.5, 3, 4.0], [[1, 2.5], [3, 4.0]], [[1], [2.5, 3], [4.0]]])
def test_flat_and_nested_numbers_decode_alike(data):
    tensor = _decode(data)
    assert tensor.data.dtype == np.float64
    assert tensor.data.tolist() == [1.0, 2.5, 3.0, 4.0]


@pytest.mark.parametrize(
    "data",
    [
        [1, 2, 3, True],  # a bool is not a number here
        [[1, 2], [3, "4"]],  # nor a string
        [1, 2, None, 4],
        [1, 2, {"v": 3}, 4],
    ],
)
def test_anything_but_numbers_is_refused(data):
    with pytest.raises(MaaslabError, match="FP32 data must be numbers"):
        _decode(data)


def test_number_subclasses_from_other_callers_still_count_as_numbers():
    tensor = _decode([np.float64(1.5), 2, np.float64(math.pi), 4])
    assert tensor.data.tolist() == [1.5, 2.0, math.pi, 4.0]


def test_a_flat_list_is_decoded_without_being_changed():
    data = [1, 2, 3, 4]
    _decode(data)
    assert data == [1, 2, 3, 4]
