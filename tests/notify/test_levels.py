"""Per-channel levels: which messages a channel hears of, by outcome (`on`) and by level
(info < warning < critical), and the levels runs, restores and alerts carry."""

from __future__ import annotations

from typing import Any

import pytest

from shared.db.models import Job
from shared.notify import messages
from shared.notify.messages import Message
from shared.settings import NotificationSettings, Outcome
from shared.settings_notify import Level


def settings(*channels: dict[str, Any]) -> NotificationSettings:
    return NotificationSettings.model_validate({"channels": channels})


def hook(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "type": "webhook", "url": f"https://hooks.example/{name}"} | fields


EVERY: tuple[Outcome, ...] = ("success", "warning", "failure")
S = settings(
    hook("old"),  # as before levels: failure and warning, level info
    hook("all", on=EVERY),
    hook("warn", on=EVERY, level="warning"),
    hook("crit", on=EVERY, level="critical"),
    hook("crit-failures", on=["failure"], level="critical"),
)


def names(outcome: Outcome, level: Level | None = None, job: Job | None = None) -> list[str]:
    return [c.name for c in messages.channels_for(S, job, outcome, level)]


def test_a_channel_hears_messages_at_or_above_its_level() -> None:
    assert names("success") == ["all"]  # a run that succeeded: info
    assert names("warning") == ["old", "all", "warn"]
    assert names("failure") == ["old", "all", "warn", "crit", "crit-failures"]  # failed: critical


def test_alerts_carry_their_severity_as_level() -> None:
    # an info alert has the warning outcome (as before) but only the info level
    assert names("warning", messages.ALERT_LEVEL["info"]) == ["old", "all"]
    assert names("warning", messages.ALERT_LEVEL["warning"]) == ["old", "all", "warn"]
    assert names("failure", messages.ALERT_LEVEL["error"]) == ["old", "all", "warn", "crit", "crit-failures"]
    assert names("failure", messages.ALERT_LEVEL["critical"]) == names("failure", "critical")


def test_a_jobs_own_outcomes_do_not_lower_a_channels_level() -> None:
    loud = Job(options={"notify": {"on": list(EVERY)}})
    assert names("success", job=loud) == ["old", "all"]  # info: only the level-info channels
    assert names("failure", job=loud) == ["old", "all", "warn", "crit", "crit-failures"]


def test_channels_without_a_level_hear_what_they_heard_before() -> None:
    old = settings(hook("ops"), hook("everything", on=EVERY))
    assert all(c.level == "info" for c in old.channels)
    for outcome, told in (("success", ["everything"]), ("warning", ["ops", "everything"]),
                          ("failure", ["ops", "everything"])):  # fmt: skip
        assert [c.name for c in messages.channels_for(old, None, outcome)] == told


@pytest.mark.parametrize(
    ("outcome", "severity", "level"),
    [
        ("success", None, "info"),
        ("warning", None, "warning"),
        ("failure", None, "critical"),
        ("warning", "info", "info"),
        ("failure", "critical", "critical"),
    ],
)
def test_a_messages_level_is_its_severity_or_its_outcomes(
    outcome: Outcome, severity: Level | None, level: Level
) -> None:
    message = Message(event="e", kind="k", outcome=outcome, title="t", lines=(), severity=severity)
    assert message.level == level


def test_a_bad_level_is_refused_naming_the_choices() -> None:
    with pytest.raises(ValueError, match="'info', 'warning' or 'critical'"):
        settings(hook("x", level="debug"))
