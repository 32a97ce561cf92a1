"""Values JSON can carry that once crashed the event parser (a 500 at the events route): each is refused
with one line naming its field."""
import pytest

from shared import events
from shared.schema import SchemaError, number

BASE = {"attempt": 1, "seq": 1, "time": 1700000000, "status": "running"}


@pytest.mark.parametrize("change, words", [
    ({"step": []}, "'step' must be one of"),
    ({"step": {"a": 1}}, "'step' must be one of"),
    ({"time": 10 ** 400}, "'time' must be between"),
    ({"metrics": {"a": 10 ** 400}}, "'metrics.a' must be between"),
    ({"metrics": {"a": -10 ** 400}}, "'metrics.a' must be between"),
])
def test_unhashable_and_huge_values_are_refused_with_one_line(change, words):
    with pytest.raises(SchemaError, match=words):
        events.parse_events(dict(BASE, **change))


def test_a_huge_integer_is_out_of_bounds_and_a_float_infinity_is_not_a_number():
    with pytest.raises(SchemaError, match="between"):
        number({"n": 10 ** 400}, "n")
    with pytest.raises(SchemaError, match="must be a number"):
        number({"n": float("inf")}, "n")
    assert number({"n": 2 ** 53}, "n") == float(2 ** 53)
