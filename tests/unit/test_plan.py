"""The planner (pure: a survey in, ordered steps out) and the executor (each step once its needs succeeded)."""

from __future__ import annotations

import threading
from concurrent.futures import Future

import pytest

from backends.memory import MemoryBackend
from syncagent.sync.execute import Outcome, RepositoryRun, StepFailed
from syncagent.sync.plan import PlanSettings, plan_repository
from syncagent.sync.steps import AwaitBlob, CheckHistory, CopyBlob, LinkLayers, LinkRevision, PublishTag, ReadBack
from syncagent.sync.survey import survey_repository
from syncagent.testing.synthetic import TreeWriter

from tests.support.engine_checks import sync


def survey(source, dest, repository, settings=PlanSettings(), **kwargs):
    problems = []
    result = survey_repository(source, dest, repository, settings, on_problem=problems.append, **kwargs)
    assert problems == []
    return result


@pytest.fixture
def world():
    source = MemoryBackend()
    writer = TreeWriter(source)
    return source, writer


def test_every_step_comes_after_the_steps_it_needs_and_blobs_before_links_before_tags(world):
    source, writer = world
    one = writer.image("app", [b"a1", b"shared"], platform="amd64")
    two = writer.image("app", [b"a2", b"shared"], platform="arm64")
    index = writer.index("app", [(one, "amd64"), (two, "arm64")], tag="v1")
    plan = plan_repository(survey(source, MemoryBackend(), "app"))
    for position, step in enumerate(plan.steps):
        assert all(need < position for need in step.needs), step
    kinds = [type(step) for step in plan.steps]
    assert kinds[-2:] == [ReadBack, PublishTag]
    revisions = {step.digest: i for i, step in enumerate(plan.steps) if isinstance(step, LinkRevision)}
    assert set(revisions) == {one[0], two[0], index}
    assert revisions[one[0]] in plan.steps[revisions[index]].needs and revisions[two[0]] in plan.steps[revisions[index]].needs
    copies = [step.digest for step in plan.steps if isinstance(step, CopyBlob)]
    assert len(copies) == len(set(copies)), "a blob shared by two manifests is planned once"
    assert all(isinstance(plan.steps[n], CopyBlob) for step in plan.steps if isinstance(step, LinkLayers) for n in step.needs)


def test_an_up_to_date_repository_plans_nothing(world):
    source, writer = world
    writer.image("app", [b"x"], tag="v1")
    dest = MemoryBackend()
    assert sync(source, dest).ok
    plan = plan_repository(survey(source, dest, "app"))
    assert plan.empty and plan.problems == []
    assert plan.up_to_date == {"tags_up_to_date": 1, "revisions_up_to_date": 1}


def test_a_revision_the_destination_holds_is_read_back_and_repaired_not_rewritten(world):
    source, writer = world
    digest, _ = writer.image("app", [b"x"])
    dest = MemoryBackend()
    assert sync(source, dest).ok
    writer.tag("app", "v2", digest)
    plan = plan_repository(survey(source, dest, "app"))
    assert [type(step) for step in plan.steps] == [ReadBack, PublishTag]
    assert plan.steps[0].repair and plan.steps[1].needs == (0,)


def test_blobs_replicated_by_the_storage_are_awaited_not_copied(world):
    source, writer = world
    writer.image("app", [b"x", b"y"], tag="v1")
    settings = PlanSettings(blobs="external", copy_after=30.0)
    plan = plan_repository(survey(source, MemoryBackend(), "app", settings), settings)
    awaited = [step for step in plan.steps if isinstance(step, AwaitBlob)]
    assert len(awaited) == 4 and not any(isinstance(step, CopyBlob) for step in plan.steps)
    assert {step.copy_after for step in awaited} == {30.0}
    manifest = [step for step in awaited if step.label == "manifest blob"]
    assert len(manifest) == 1 and manifest[0].size is not None


def test_problems_found_while_planning_name_the_tag_and_plan_nothing_for_it(world):
    source, writer = world
    good, _ = writer.image("app", [b"x"], tag="good")
    broken, _ = writer.manifest("app", b"{not json", [], tag="broken")
    plan = plan_repository(survey(source, MemoryBackend(), "app"))
    assert sorted((p.kind, p.tag) for p in plan.problems) == [
        ("malformed-manifest", None), ("revision-not-published", None), ("tag-not-published", "broken")]
    assert [step.tag for step in plan.steps if isinstance(step, PublishTag)] == ["good"]


def test_history_checks_come_last(world):
    source, writer = world
    writer.image("app", [b"x"], tag="v1")
    dest = MemoryBackend()
    assert sync(source, dest).ok
    plan = plan_repository(survey(source, dest, "app", check_history=True))
    assert [type(step) for step in plan.steps] == [CheckHistory]


# --- the executor -------------------------------------------------------------------------------------


class Scripted:
    """A performer whose blob steps finish when the test says so, recording what ran and what was reported."""

    def __init__(self, failing=()):
        self.blobs: dict[int, Future] = {}
        self.ran: list = []
        self.reported: list = []
        self.failing = failing

    def start_blob(self, step):
        future = Future()
        self.blobs[step.digest] = future
        return future

    def perform(self, step, needs):
        if any(step is failing for failing in self.failing):
            raise RuntimeError("boom")
        self.ran.append(step)
        return Outcome.DONE

    def failed(self, step, failure, *, propagated):
        self.reported.append((step, failure.reason, propagated))


def two_tag_plan(world):
    source, writer = world
    writer.image("app", [b"big layer"], tag="slow")
    writer.image("app", [b"small layer"], tag="fast")
    return plan_repository(survey(source, MemoryBackend(), "app"))


def run_inline(steps, performer):
    return RepositoryRun(steps, performer, lambda advance: advance(), threading.Event())


def test_a_tag_waiting_for_a_blob_holds_back_only_what_needs_that_blob(world):
    plan = two_tag_plan(world)
    performer = Scripted()
    run = run_inline(plan.steps, performer)
    done = run.start()
    slow_blobs = {d for s in plan.steps if isinstance(s, LinkLayers) and s.manifest == _tag_digest(plan, "slow") for d in s.blobs}
    for digest, future in list(performer.blobs.items()):
        if digest not in slow_blobs:
            future.set_result(Outcome.DONE)
    published = [s.tag for s in performer.ran if isinstance(s, PublishTag)]
    assert published == ["fast"] and not done.done()
    for digest in slow_blobs:
        performer.blobs[digest].set_result(Outcome.DONE)
    assert done.done()
    assert [s.tag for s in performer.ran if isinstance(s, PublishTag)] == ["fast", "slow"]


def test_a_failed_blob_fails_what_needs_it_with_its_reason_and_nothing_else(world):
    plan = two_tag_plan(world)
    performer = Scripted()
    run = run_inline(plan.steps, performer)
    done = run.start()
    slow_blobs = {d for s in plan.steps if isinstance(s, LinkLayers) and s.manifest == _tag_digest(plan, "slow") for d in s.blobs}
    for digest, future in list(performer.blobs.items()):
        if digest in slow_blobs:
            future.set_exception(StepFailed(f"blob {digest}: corrupt"))
        else:
            future.set_result(Outcome.DONE)
    assert done.done()
    assert [s.tag for s in performer.ran if isinstance(s, PublishTag)] == ["fast"]
    tag_failures = [(step.tag, reason) for step, reason, propagated in performer.reported if isinstance(step, PublishTag)]
    assert len(tag_failures) == 1 and tag_failures[0][0] == "slow" and "corrupt" in tag_failures[0][1]


def test_an_unexpected_exception_fails_its_step_as_an_internal_error_and_the_rest_goes_on(world):
    plan = two_tag_plan(world)
    slow_revision = next(s for s in plan.steps if isinstance(s, LinkRevision) and s.digest == _tag_digest(plan, "slow"))
    performer = Scripted(failing=[slow_revision])
    run = run_inline(plan.steps, performer)
    done = run.start()
    for future in list(performer.blobs.values()):
        future.set_result(Outcome.DONE)
    assert done.done()
    assert [s.tag for s in performer.ran if isinstance(s, PublishTag)] == ["fast"]
    first = performer.reported[0]
    assert first[0] == slow_revision and "internal error" in first[1] and not first[2]


def test_a_cancelled_run_ends_without_reporting(world):
    plan = two_tag_plan(world)
    performer = Scripted()
    cancelled = threading.Event()
    run = RepositoryRun(plan.steps, performer, lambda advance: advance(), cancelled)
    done = run.start()
    cancelled.set()
    for future in list(performer.blobs.values()):
        future.set_result(Outcome.DONE)
    assert done.done() and performer.reported == [] and not any(isinstance(s, PublishTag) for s in performer.ran)


def _tag_digest(plan, tag):
    return next(step.digest for step in plan.steps if isinstance(step, PublishTag) and step.tag == tag)
