"""The fakes keep faith with what they stand for: same method signatures, same errors."""

from __future__ import annotations

import inspect

import pytest

from shared.runtime.bus import Permanent, Retryable
from shared.vsphere import VCenter, VSphereError
from shared.vsphere.pool import VCenters
from tests.unit.fakes import FakeVCenter, FakeVCenters


@pytest.mark.parametrize(("fake", "real"), [(FakeVCenter, VCenter), (FakeVCenters, VCenters)])
def test_each_faked_method_has_the_real_ones_signature(fake: type, real: type) -> None:
    faked = [n for n, _ in inspect.getmembers(fake, inspect.isfunction) if not n.startswith("_")]
    shared = [n for n in faked if hasattr(real, n)]
    assert len(shared) >= 3
    for name in shared:
        got, want = inspect.signature(getattr(fake, name)), inspect.signature(getattr(real, name))
        assert list(got.parameters) == list(want.parameters), name
        kinds = [(p.kind, p.default) for p in got.parameters.values()]
        assert kinds == [(p.kind, p.default) for p in want.parameters.values()], name


async def test_the_pool_turns_vsphere_errors_into_retryable_or_permanent() -> None:
    vc = FakeVCenter()
    pool = FakeVCenters(vc)
    vc.fail("vm", VSphereError("busy", fault="TaskInProgress", retryable=True))
    with pytest.raises(Retryable):
        await pool.call("vc1", lambda v: v.vm("vm-1"))
    with pytest.raises(Permanent) as missing:
        await pool.call("vc1", lambda v: v.vm("vm-1"))  # no such VM
    assert "does not exist" in str(missing.value)
    with pytest.raises(Permanent, match="not configured"):
        pool.get("vc2")
