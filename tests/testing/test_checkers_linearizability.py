"""The register linearizability checker on known-good and known-bad histories, generated ones
from a sequential model, and mutated ones judged against a brute-force oracle."""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blocks.core.errors import InvalidArgument
from blocks.testing.checkers import (
    Operation,
    RegisterModel,
    check_linearizable,
    check_register_histories,
)


def op(
    function: str,
    value: object,
    invoke: int,
    complete: int | None,
    *,
    output: object = None,
    status: str = "ok",
    key: object = "k",
    client: int = 0,
    index: int = 0,
) -> Operation:
    if complete is None and status == "ok":
        status = "info"
    return Operation(index, client, function, key, value, output, status, invoke, complete)  # type: ignore[arg-type]


def w(value: object, invoke: int, complete: int | None, **kw: object) -> Operation:
    return op("write", value, invoke, complete, **kw)  # type: ignore[arg-type]


def r(output: object, invoke: int, complete: int, **kw: object) -> Operation:
    return op("read", None, invoke, complete, output=output, **kw)  # type: ignore[arg-type]


def valid(*ops: Operation, initial: object = None) -> bool | None:
    numbered = [
        Operation(
            i, o.client, o.function, o.key, o.value, o.output, o.status, o.invoke_ns, o.complete_ns
        )
        for i, o in enumerate(ops)
    ]
    return check_register_histories(numbered, initial=initial).valid


GOOD = {
    "sequential": [w(1, 0, 1), r(1, 2, 3), w(2, 4, 5), r(2, 6, 7)],
    "initial value": [r(None, 0, 1), w(1, 2, 3)],
    "read concurrent with write sees old": [w(1, 0, 10), r(None, 1, 2)],
    "read concurrent with write sees new": [w(1, 0, 10), r(1, 1, 2)],
    "two concurrent writes, either order": [w(1, 0, 10), w(2, 0, 10), r(1, 11, 12)],
    "info write seen later": [w(1, 0, None), r(None, 1, 2), r(1, 3, 4)],
    "info write never seen": [w(1, 0, None), r(None, 5, 6)],
    "equal times are concurrent": [w(1, 0, 5), r(None, 5, 6)],
    "cas succeeds": [w(1, 0, 1), op("cas", (1, 2), 2, 3), r(2, 4, 5)],
    "failed write is invisible": [w(1, 0, 1), w(2, 2, 3, status="fail"), r(1, 4, 5)],
}

BAD = {
    "stale read": [w(1, 0, 1), w(2, 2, 3), r(1, 4, 5)],
    "read of a value never written": [w(1, 0, 1), r(7, 2, 3)],
    "new then old while a write runs": [w(1, 0, 10), r(1, 1, 2), r(None, 3, 4)],
    "failed write seen": [w(1, 0, 1, status="fail"), r(1, 2, 3)],
    "cas from a wrong value": [w(1, 0, 1), op("cas", (3, 2), 2, 3), r(2, 4, 5)],
    "info write then unseen": [w(1, 0, None), r(1, 1, 2), r(None, 3, 4)],
}


@pytest.mark.parametrize("name", sorted(GOOD))
def test_known_good_histories_are_linearizable(name: str) -> None:
    assert valid(*GOOD[name]) is True


@pytest.mark.parametrize("name", sorted(BAD))
def test_known_bad_histories_are_not(name: str) -> None:
    assert valid(*BAD[name]) is False


def test_keys_are_checked_separately_and_the_counterexample_names_the_blocked_read() -> None:
    ops = [
        w(1, 0, 1, key="a", index=0),
        w(2, 2, 3, key="a", index=1),
        r(1, 4, 5, key="a", index=2),
        w(5, 0, 1, key="b", index=3),
        r(5, 2, 3, key="b", index=4),
    ]
    report = check_register_histories(ops)
    assert report.valid is False
    [failure] = report.failures
    assert failure.key == "a"
    assert failure.blocked is not None and failure.blocked.index == 2
    assert [o.index for o in failure.prefix] == [0, 1]
    assert "cannot place read(1)#2" in report.describe()


def test_the_search_bound_gives_an_unknown_verdict_not_a_guess() -> None:
    ops = [w(i, 0, 100, client=i, index=i) for i in range(12)] + [r(99, 101, 102, index=12)]
    verdict = check_linearizable(ops, RegisterModel(), steps_max=50)
    assert verdict.valid is None and verdict.steps > 50
    assert check_linearizable(ops, RegisterModel()).valid is False


def test_bad_input_is_a_typed_error() -> None:
    with pytest.raises(InvalidArgument):
        check_linearizable([op("increment", 1, 0, 1)], RegisterModel())
    with pytest.raises(InvalidArgument):
        check_linearizable([], RegisterModel(), steps_max=0)
    with pytest.raises(InvalidArgument):
        Operation(0, 0, "read", "k", None, None, "ok", 5, 4)


# -- generated histories -------------------------------------------------------------------


@st.composite
def linearizable_histories(draw: st.DrawFn) -> list[Operation]:
    """A sequential register run, each operation stretched around its linearization point;
    some writes end ``info`` (they happened, the client never heard), and some ``info``
    writes never happened at all."""
    count = draw(st.integers(1, 14))
    spread = draw(st.integers(0, 40))
    state: object = None
    ops: list[Operation] = []
    for number in range(count):
        point = number * 10
        before = draw(st.integers(0, spread))
        after = draw(st.integers(0, spread))
        client = draw(st.integers(0, 5))
        if draw(st.booleans()):
            value = draw(st.integers(0, 3))
            state = value
            unknown = draw(st.integers(0, 5)) == 0
            ops.append(w(value, point - before, None if unknown else point + after, client=client))
        else:
            ops.append(r(state, point - before, point + after, client=client))
    for _ in range(draw(st.integers(0, 2))):  # writes that never took effect
        ops.append(w(99, draw(st.integers(0, count * 10)), None, status="info"))
    return ops


@settings(max_examples=150, deadline=None)
@given(linearizable_histories())
def test_histories_from_the_sequential_model_are_linearizable(ops: list[Operation]) -> None:
    assert valid(*ops) is True


def _brute_force(ops: Sequence[Operation]) -> bool:
    """Try every order of every subset that keeps all non-info operations (tiny inputs)."""
    relevant = [o for o in ops if o.status != "fail"]
    required = [o for o in relevant if o.status == "ok"]
    optional = [o for o in relevant if o.status == "info"]
    model = RegisterModel()
    for size in range(len(optional) + 1):
        for chosen in itertools.combinations(optional, size):
            for order in itertools.permutations(required + list(chosen)):
                if any(
                    later.complete_ns is not None and later.complete_ns < earlier.invoke_ns
                    for i, earlier in enumerate(order)
                    for later in order[i + 1 :]
                ):
                    continue
                state: object = None
                for o in order:
                    legal, state = model.step(state, o)  # type: ignore[assignment]
                    if not legal:
                        break
                else:
                    return True
    return False


def _random_history(rng: random.Random) -> list[Operation]:
    ops = []
    for index in range(rng.randint(1, 6)):
        invoke = rng.randint(0, 12)
        complete: int | None = invoke + rng.randint(0, 8)
        status = rng.choice(["ok", "ok", "ok", "info", "fail"])
        if rng.random() < 0.5:
            if status == "info":
                complete = None
            ops.append(w(rng.randint(1, 3), invoke, complete, status=status, index=index))
        else:
            assert complete is not None
            ops.append(r(rng.choice([None, 1, 2, 3]), invoke, complete, index=index))
    return ops


def test_mutated_histories_agree_with_a_brute_force_oracle() -> None:
    verdicts = {True: 0, False: 0}
    rng = random.Random(14)
    for _ in range(600):
        ops = _random_history(rng)
        expected = _brute_force(ops)
        assert check_linearizable(ops, RegisterModel()).valid is expected, ops
        verdicts[expected] += 1
    assert min(verdicts.values()) > 100, verdicts  # both verdicts well exercised


@settings(max_examples=150, deadline=None)
@given(linearizable_histories(), st.data())
def test_a_mutated_read_is_judged_as_the_oracle_judges_it(
    ops: list[Operation], data: st.DataObject
) -> None:
    reads = [i for i, o in enumerate(ops) if o.function == "read"]
    small = [o for o in ops if o.status != "fail"]
    if not reads or len(small) > 7:
        return
    target = data.draw(st.sampled_from(reads))
    old = ops[target]
    ops[target] = r(
        data.draw(st.sampled_from([None, 0, 1, 2, 3, 99])), old.invoke_ns, old.complete_ns or 0
    )
    assert valid(*ops) is _brute_force(ops)
