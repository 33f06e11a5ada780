"""Rollouts on real SQLite tenants, the jobs run in this process one after another (what a
worker does), the coordinator stepped as its task would be: plans, waves, the approval of the
whole set of plans, the failure policy, retry and resume, pause, cancel, skip, bad input.
tests/test_rollout_fleet.py runs the same with real worker processes on 60 databases."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from environments import execution, rollout_coordinator, rollout_plans, rollout_specs, rollouts
from environments.core.versions import read_versions
from environments.models import AuditEvent, Environment, Job, Notification, Rollout
from environments.transitions import Refused
from examples.inventory import revisions as inv
from tests.conftest import alembic, drive

pytestmark = pytest.mark.django_db(transaction=True)

WAVES = ["canary: count=1 parallel=1", "eu: region=eu parallel=2", "rest: parallel=4"]


@pytest.fixture
def fleet(saas, unconsumed_queue):
    """Nine SQLite tenants t000…t008: at head, 3 behind and 6 behind in turn; odd ones eu."""
    return saas(9)


def heads(environment: Environment) -> list[str]:
    state = read_versions(environment.get_url(), timeout=5)
    assert state.failure is None, state.message
    return sorted(state.heads or ())


def request(project, user, *, waves=WAVES, **options) -> Rollout:
    rollout = rollout_plans.rollout_request(
        project=project,
        target=options.pop("target", "heads"),
        user=user,
        waves=[rollout_specs.wave_parse(text) for text in waves],
        take_backup=options.pop("take_backup", False),
        **options,
    )
    return rollout_plans.rollout_plan(rollout_id=rollout.pk)  # what the worker's task runs


def states(rollout: Rollout) -> dict[str, str]:
    return dict(rollout.targets.values_list("environment__name", "state"))


def test_a_rollout_is_planned_as_distinct_plans_with_their_sql_and_waves(fleet, users):
    rollout = request(fleet, users["alice"])

    assert rollout.status == "planned", rollout.note
    by_from = {tuple(plan["from_heads"]): plan for plan in rollout.plans}
    assert set(by_from) == {(inv.STAGING_TARGET,), (inv.PROD_TARGET,)}
    assert by_from[(inv.PROD_TARGET,)]["targets"] == 3
    assert by_from[(inv.STAGING_TARGET,)]["revisions"][-1] == inv.HEAD
    assert "CREATE TABLE audit_notes" in by_from[(inv.STAGING_TARGET,)]["sql"]
    waves = {
        wave.name: sorted(wave.targets.values_list("environment__name", flat=True))
        for wave in rollout.waves.all()
    }
    # the canary takes the first target with work to do; t000, at head, joins an uncounted wave
    assert waves["canary"] == ["t001"]
    assert waves["eu"] == ["t003", "t005", "t007"]
    assert waves["rest"] == ["t000", "t002", "t004", "t006", "t008"]
    assert states(rollout)["t000"] == "unchanged"
    assert len(rollout.plan_sha256) == 64
    assert rollout_plans.plan_sha256(rollout) == rollout.plan_sha256  # stable


def test_a_rollout_brings_every_target_to_head_wave_after_wave(fleet, users):
    rollout = request(fleet, users["alice"])
    rollout = rollouts.rollout_submit(rollout=rollout, user=users["alice"])
    assert rollout.status == "running"  # no target's policy asks for approvals

    rollout = drive(rollout)

    assert rollout.status == "completed", rollout.note
    assert rollout.note == "9 of 9 hold the target."
    for environment in fleet.environments.all():
        assert heads(environment) == [inv.HEAD], environment.name
    waves = list(rollout.waves.order_by("number"))
    for earlier, later in zip(waves, waves[1:], strict=False):
        last_end = max(
            Job.objects.filter(
                rollout=rollout, environment__in=earlier.targets.values("environment")
            ).values_list("finished_at", flat=True)
        )
        first_start = min(
            Job.objects.filter(
                rollout=rollout, environment__in=later.targets.values("environment")
            ).values_list("started_at", flat=True)
        )
        assert last_end <= first_start, f"{later.name} started before {earlier.name} ended"
        assert earlier.finished_at is not None
    assert Job.objects.filter(rollout=rollout).count() == 6  # one job per target to change
    assert AuditEvent.objects.filter(action="rollout_completed").exists()


def test_one_approval_covers_the_whole_set_of_plans_under_the_strictest_policy(fleet, people):
    Environment.objects.filter(name="t004").update(required_approvals=2)
    rollout = request(fleet, people["bob"])
    assert rollout.required_approvals == 2
    rollout = rollouts.rollout_submit(rollout=rollout, user=people["bob"])
    assert rollout.status == "awaiting_approval"

    with pytest.raises(Refused, match="someone else must decide"):
        rollouts.rollout_decide(
            rollout=rollout, user=people["bob"], decision="approve", plan_sha256=rollout.plan_sha256
        )
    with pytest.raises(Refused, match="Read them again"):
        rollouts.rollout_decide(
            rollout=rollout, user=people["alice"], decision="approve", plan_sha256="0" * 64
        )
    rollout = rollouts.rollout_decide(
        rollout=rollout, user=people["alice"], decision="approve", plan_sha256=rollout.plan_sha256
    )
    assert rollout.status == "awaiting_approval"
    assert not Job.objects.filter(rollout=rollout).exists()  # nothing ran on one approval
    rollout = rollouts.rollout_decide(
        rollout=rollout, user=people["carol"], decision="approve", plan_sha256=rollout.plan_sha256
    )
    assert rollout.status == "running"

    rollout = drive(rollout)

    assert rollout.status == "completed", rollout.note
    job = Job.objects.get(rollout=rollout, environment__name="t004")
    log = "\n".join(job.log_lines.values_list("text", flat=True))
    assert f"A target of rollout #{rollout.pk}, whose plans were approved." in log


def test_a_failure_stops_the_rollout_in_its_wave_then_retry_and_resume_finish_it(fleet, users):
    broken = Environment.objects.get(name="t005")  # eu: the second wave
    path = Path(broken.get_url().removeprefix("sqlite:///"))
    with sqlite3.connect(path) as db:  # the table a pending revision creates is there already
        db.execute("CREATE TABLE audit_notes (id INTEGER PRIMARY KEY)")
    rollout = rollouts.rollout_submit(rollout=request(fleet, users["alice"]), user=users["alice"])

    rollout = drive(rollout)

    assert rollout.status == "stopped"
    assert "Stopped in wave 2 (eu): 1 target failed, t005 first" in rollout.note
    assert "audit_notes" in rollout.note and "already exists" in rollout.note
    rest = rollout.waves.get(name="rest")
    assert rest.started_at is None
    waiting = rest.targets.exclude(state="unchanged").select_related("environment")
    assert [target.environment.name for target in waiting] == ["t002", "t004", "t008"]
    for target in waiting:
        assert heads(target.environment) != [inv.HEAD]  # wave 3 untouched, on the databases
        assert target.state == "waiting"

    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE audit_notes")
    assert rollouts.rollout_retry_failed(rollout=rollout, user=users["alice"]) == 1
    rollout = rollouts.rollout_resume(rollout=rollout, user=users["alice"])
    rollout = drive(rollout)

    assert rollout.status == "completed", rollout.note
    assert heads(broken) == [inv.HEAD]
    target = rollout.targets.get(environment=broken)
    assert target.attempts == 2
    assert all(heads(e) == [inv.HEAD] for e in fleet.environments.all())


def test_a_target_moved_by_hand_after_approval_fails_and_names_the_reason(fleet, users):
    rollout = rollouts.rollout_submit(rollout=request(fleet, users["alice"]), user=users["alice"])
    mover = Environment.objects.get(name="t002")  # in the last wave, 6 behind
    alembic(Path(fleet.alembic_ini), mover.get_url(), "upgrade", inv.STAGING_TARGET)

    rollout = drive(rollout)

    assert rollout.status == "stopped"
    target = rollout.targets.get(environment=mover)
    assert target.state == "failed"
    assert "The database moved since this plan" in target.note
    rollouts.rollout_retry_failed(rollout=rollout, user=users["alice"])
    rollout = drive(rollouts.rollout_resume(rollout=rollout, user=users["alice"]))
    # read again, it now starts where an approved plan starts: that plan runs
    assert rollout.status == "completed", rollout.note
    assert heads(mover) == [inv.HEAD]


def test_pause_holds_the_next_targets_and_cancel_ends_it_untouched(fleet, users):
    rollout = rollouts.rollout_submit(rollout=request(fleet, users["alice"]), user=users["alice"])
    rollout_coordinator.rollout_advance(rollout_id=rollout.pk)  # the canary is queued
    rollout = rollouts.rollout_pause(rollout=rollout, user=users["alice"])
    for job in Job.objects.filter(rollout=rollout, status="queued"):
        execution.job_run(job_id=job.pk)  # what was queued still runs

    rollout = drive(rollout)

    assert rollout.status == "paused"
    assert Job.objects.filter(rollout=rollout).count() == 1
    rollout = rollouts.rollout_cancel(rollout=rollout, user=users["alice"])
    assert rollout.status == "cancelled"
    assert set(states(rollout).values()) == {"succeeded", "unchanged", "cancelled"}
    assert heads(Environment.objects.get(name="t004")) == [inv.STAGING_TARGET]


def test_a_skipped_target_is_never_started(fleet, users):
    rollout = rollouts.rollout_submit(rollout=request(fleet, users["alice"]), user=users["alice"])
    skipped = rollout.targets.get(environment__name="t008")

    rollouts.rollout_skip(rollout=rollout, target=skipped, user=users["alice"])
    rollout = drive(rollout)

    assert rollout.status == "completed"
    assert "1 skipped" in rollout.note
    assert not Job.objects.filter(rollout=rollout, environment__name="t008").exists()
    assert heads(Environment.objects.get(name="t008")) == [inv.PROD_TARGET]


def test_targets_that_cannot_be_planned_are_named_and_left_alone(fleet, users, tmp_path):
    Path(Environment.objects.get(name="t004").get_url().removeprefix("sqlite:///")).unlink()
    rollout = request(fleet, users["alice"], target=inv.STAGING_TARGET)

    assert rollout.status == "planned"
    found = {t.environment.name: t for t in rollout.targets.select_related("environment")}
    assert found["t004"].state == "blocked"
    assert "does not exist" in found["t004"].note or "Cannot be read" in found["t004"].note
    # an upgrade never goes back: at head already, t000 has nothing to do, as t001 at the target
    assert found["t000"].state == "unchanged" and found["t001"].state == "unchanged"
    assert found["t002"].state == "waiting"


def test_bad_requests_are_refused_with_a_sentence(fleet, users):
    with pytest.raises(Refused, match="is not key=value"):
        rollout_specs.wave_parse("eu: region")
    with pytest.raises(Refused, match="parallel must be a whole number"):
        rollout_specs.wave_parse("eu: parallel=0")
    with pytest.raises(Refused, match="not a failure policy"):
        rollout_specs.failure_parse("sometimes")
    assert rollout_specs.failure_parse("10%") == ("percent", 10)
    with pytest.raises(Refused, match="may not plan rollouts"):
        request(fleet, users["vera"])
    nobody = request(fleet, users["alice"], labels={"region": "mars"})
    assert nobody.status == "failed"
    assert "No environment of saas has the labels region=mars" in nobody.note
    unknown = request(fleet, users["alice"], target="deadbeef")
    assert {t.state for t in unknown.targets.all()} == {"blocked"}
    assert "deadbeef" in unknown.targets.first().note


def test_a_prod_wave_waits_until_its_staging_source_held_the_revisions_long_enough(fleet, users):
    # t002, t005, t008 are prod-tier tenants; each promotes from the staging tenant before it
    for prod, staging in (("t002", "t001"), ("t005", "t004"), ("t008", "t007")):
        Environment.objects.filter(name=prod).update(
            promotion_from=Environment.objects.get(name=staging), promotion_min_hours=24
        )
    waves = ["staging: tier=staging parallel=4", "prod: tier=prod parallel=4", "rest: parallel=4"]
    rollout = request(fleet, users["alice"], waves=waves)
    rollout = rollouts.rollout_submit(rollout=rollout, user=users["alice"])

    rollout = drive(rollout)

    assert rollout.status == "running"
    assert rollout.waves.get(name="staging").finished_at is not None
    assert rollout.waves.get(name="prod").started_at is None
    assert rollout.note.startswith("Wave 2 (prod) waits: t001 has held")
    assert "the policy asks for 24 h. Eligible from" in rollout.note
    assert heads(Environment.objects.get(name="t002")) == [inv.PROD_TARGET]

    Environment.objects.filter(promotion_min_hours=24).update(promotion_min_hours=0)
    rollout = drive(rollout)

    assert rollout.status == "completed", rollout.note
    assert heads(Environment.objects.get(name="t002")) == [inv.HEAD]


def test_webhooks_say_when_each_wave_finishes_and_when_the_rollout_ends(fleet, users):
    fleet.set_webhook_url("https://hooks.example.com/retort")
    fleet.save()
    rollout = rollouts.rollout_submit(rollout=request(fleet, users["alice"]), user=users["alice"])

    drive(rollout)

    messages = list(Notification.objects.filter(project=fleet).order_by("id"))
    events = [message.event for message in messages]
    assert events == ["rollout_wave_finished"] * 3 + ["rollout_finished"]
    assert [m.payload["wave"]["name"] for m in messages[:3]] == ["canary", "eu", "rest"]
    assert messages[0].payload["targets"] == {"succeeded": 1}
    assert "finished in" not in messages[-1].payload["text"]
    assert f"rollout #{rollout.pk}" in messages[-1].payload["text"]
    assert "completed" in messages[-1].payload["text"]
