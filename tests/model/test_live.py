"""shared/model/live.py: the one filter of live events by role, the query's filter, the phase map."""

from __future__ import annotations

import pytest

from shared.catalog.restores import PHASES as RESTORE_VBM_PHASES
from shared.model.access import Permission, Role
from shared.model.live import (
    FAMILIES,
    NEEDS,
    PHASES,
    RESTORE_PHASES,
    TASK_PHASES,
    BadQuery,
    Filter,
    eta_seconds,
    public_phase,
    visible,
)


def test_every_role_sees_what_it_may_read_and_nothing_else() -> None:
    assert set(NEEDS) == set(FAMILIES)
    for role in Role:
        assert all(visible(f"{f}.state", role) for f in FAMILIES)  # today every role reads all of them
    # an event type needing a permission the caller lacks is dropped, an unknown one always
    needs = {**NEEDS, "alert": Permission.USERS_READ}
    assert not visible("alert.raised", Role.VIEWER, needs)
    assert not visible("alert.raised", Role.OPERATOR, needs)
    assert visible("alert.raised", Role.ADMIN, needs)
    assert visible("run.state", Role.VIEWER, needs)
    assert not visible("secret.changed", Role.ADMIN)


def test_the_query_filter() -> None:
    f = Filter.parse({"run": ["r1,r2", " r3 "], "type": ["task", "progress"]})
    assert f.runs == {"r1", "r2", "r3"} and f.types == {"task", "progress"}
    assert f.matches({"type": "task.state", "run_id": "r2"})
    assert not f.matches({"type": "run.state", "run_id": "r2"})  # not of the types asked for
    assert not f.matches({"type": "task.state", "run_id": "r9"})
    either = Filter.parse({"run": ["r1"], "restore": ["x1"]})  # about any of the things named
    assert either.matches({"type": "restore.state", "restore_id": "x1", "run_id": None})
    assert either.matches({"type": "alert.raised", "run_id": "r1"})
    assert Filter.parse({}).matches({"type": "alert.raised"})
    with pytest.raises(BadQuery) as bad:
        Filter.parse({"type": ["run,bogus"]})
    assert bad.value.field == "type" and "bogus" in str(bad.value)
    with pytest.raises(BadQuery) as bad:
        Filter.parse({"job": ["j" * 161]})
    assert bad.value.field == "job"


def test_every_vbm_phase_maps_onto_a_public_one() -> None:
    assert set(TASK_PHASES.values()) | set(RESTORE_PHASES.values()) <= set(PHASES)
    assert public_phase("task", "transfer") == "downloading"
    assert public_phase("restore", "uploading") == "writing"
    assert public_phase("restore", "checking") == "connecting"
    # `done` only once the work is over: a restore still powering on or cleaning up is not done
    for still_running in ("powering_on", "cleaning_up", "stopping"):
        assert public_phase("restore", still_running) == "writing"
    assert set(RESTORE_PHASES) == set(RESTORE_VBM_PHASES)  # every phase a restore can be in is mapped
    assert public_phase("task", None) is None
    assert eta_seconds(40, 100, 20.0) == 3.0
    assert eta_seconds(100, 100, 20.0) is None and eta_seconds(1, 100, 0.0) is None
