"""Hypothesis properties of the agent's request pipeline (pure logic, no engine needed).

Bodies are JSON-ish dicts mixing plausible values with junk (wrong types, NaN, huge
numbers, NUL, newlines). Whatever the agent accepts (the protocol model, then the node's
limits, then the command) must be runnable: finite timeouts, fully matched ids, an image
reference Docker takes and a docker-py HostConfig that builds with what the container
factory passes. Everything else must be a 400 (BadRequest), never another exception.
"""

from __future__ import annotations

import math
import re
from types import SimpleNamespace

import docker
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jupyter_remote.agent.containers import host_config_kwargs
from jupyter_remote.agent.executions import ExecutionManager
from jupyter_remote.agent.executions.record import Execution
from jupyter_remote.agent.jobs import JobManager
from jupyter_remote.agent.sessions import SessionManager
from jupyter_remote.agent.specs import ContainerSpec, Limits, command_of, safe_name
from jupyter_remote.protocol.bodies import ExecutionBody, JobBody, SessionBody, TaskBody
from jupyter_remote.protocol.common import ID_RE, MAX_TIMEOUT
from jupyter_remote.protocol.errors import BadRequest, Conflict
from jupyter_remote.protocol.validation import parse_body

LIMITS = Limits(host_cpus=8.0, host_memory=16 << 30)
DEFAULT_IMAGE = "jupyter-remote/busybox:local"
API_VERSION = "1.43"

# Docker's own reference grammar (distribution/reference), checked independently of ours.
_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"{_LABEL}(?:\.{_LABEL})*(?::[0-9]+)?"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*"
DOCKER_REFERENCE = re.compile(
    rf"\A(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*(?::[\w][\w.-]{{0,127}})?"
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?\Z"
)
CONTAINER_NAME = re.compile(r"\A[a-zA-Z0-9][a-zA-Z0-9_.-]+\Z")

junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
ids = st.one_of(
    st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.:-]{0,20}\Z"),
    st.sampled_from(["a\n", "a/b", "..", "", " x", "x" * 129, "a\x00"]),
)
numbers = st.one_of(
    st.floats(min_value=-10, max_value=1e12),
    st.integers(min_value=-5, max_value=2**65),
    st.sampled_from([1e308, 2.0**64, 0.01, 0.5, 1, 4, 1800]),
)
texts = st.one_of(st.text(min_size=1, max_size=20), st.sampled_from(["true", "echo hi", "a\x00b"]))
plausible = {
    "execution_id": ids,
    "session_id": ids,
    "job_id": ids,
    "image": st.one_of(
        st.sampled_from([DEFAULT_IMAGE, "busybox", "localhost:5000/x/y:1", "../../etc", "é"]),
        st.from_regex(r"\A[a-zA-Z0-9.:/_-]{1,30}\Z"),
    ),
    "memory": st.one_of(
        st.integers(min_value=0, max_value=2**60),
        st.from_regex(r"\A[0-9]{1,8}(\.[0-9])?[kmgtKMGT]?i?[bB]?\Z"),
        st.sampled_from(["512m", "9999999t", "lots"]),
    ),
    "cpus": numbers,
    "pids_limit": numbers,
    "timeout": numbers,
    "idle_timeout": numbers,
    "env": st.one_of(
        st.dictionaries(st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_]{0,5}\Z"), texts, max_size=3),
        st.lists(st.sampled_from(["A=1", "B=x=y", "nope"]), max_size=3),
    ),
    "workdir": st.one_of(st.sampled_from(["/", "/work", "rel", "/a\x00"]), st.text(max_size=10)),
    "network": st.sampled_from(["none", "host", "bridge", "x"]),
    "command": texts,
    "python": texts,
    "argv": st.one_of(st.lists(texts, min_size=0, max_size=3), junk),
    "interpreter": st.sampled_from(["python3", "python"]),
    "name": texts,
    "parallelism": st.integers(min_value=-1, max_value=5),
    "signal": st.sampled_from(["SIGTERM", "SIGKILL", "SIGNOPE"]),
}


good = {
    "execution_id": st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.:-]{0,20}\Z"),
    "image": st.sampled_from([DEFAULT_IMAGE, "busybox", "localhost:5000/x/y:1", "a.b/c_d:1.0"]),
    "memory": st.one_of(st.integers(6 << 20, 16 << 30), st.sampled_from(["512m", "1g", "6MiB"])),
    "cpus": st.one_of(st.floats(0.01, 8.0), st.integers(1, 8)),
    "pids_limit": st.integers(16, 100_000),
    "timeout": st.one_of(st.none(), st.floats(0.001, MAX_TIMEOUT), st.integers(1, 10**6)),
    "idle_timeout": st.one_of(st.none(), st.floats(0, 1e6)),
    "env": st.dictionaries(
        st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_]{0,5}\Z"),
        st.text(max_size=5).filter(lambda t: "\x00" not in t),
        max_size=3,
    ),
    "workdir": st.sampled_from(["/", "/work", "/tmp/x y"]),
    "network": st.just("none"),
    "command": st.text(min_size=1, max_size=20).filter(lambda t: t.strip() and "\x00" not in t),
    "argv": st.lists(st.text(max_size=5).filter(lambda t: "\x00" not in t), min_size=1, max_size=3),
    "interpreter": st.sampled_from(["python3", "python"]),
    "name": st.text(max_size=10).filter(lambda t: "\x00" not in t),
    "parallelism": st.integers(0, 5),
}
for _f in ("session_id", "job_id"):
    good[_f] = good["execution_id"]
good["python"] = good["command"]


def bodies(fields: tuple[str, ...], required: tuple[str, ...] = (), command: str | None = None):
    """A body that the models accept, then often one field made plausible-but-odd or junk."""
    keep = tuple(f for f in fields if f not in COMMANDS and f not in required)
    base = st.fixed_dictionaries(
        {f: good[f] for f in (*required, *((command,) if command else ()))},
        optional={f: good[f] for f in keep if f in good},
    )
    spoil = st.tuples(
        st.sampled_from(fields),
        st.one_of(*(st.one_of(plausible[f], junk) for f in fields[:1]), junk),
    )

    def spoiled(body_and_field):
        body, (field, _) = body_and_field
        return st.one_of(plausible.get(field, junk), junk).map(lambda v: {**body, field: v})

    return st.one_of(base, st.tuples(base, spoil).flatmap(spoiled))


COMMANDS = ("command", "python", "argv")


def with_a_command(fields: tuple[str, ...], required: tuple[str, ...] = ()):
    """Bodies giving one kind of command, or none (refused, except a job with tasks)."""
    return st.one_of(*(bodies(fields, required, c) for c in COMMANDS), bodies(fields, required))


EXECUTION_FIELDS = tuple(ExecutionBody.model_fields)
SESSION_FIELDS = tuple(SessionBody.model_fields)
TASK_FIELDS = tuple(f for f in TaskBody.model_fields if f != "service")
JOB_FIELDS = tuple(f for f in JobBody.model_fields if f != "tasks")

PROPS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check_container(spec) -> None:
    """What Docker would do with the spec must succeed: the properties' core."""
    assert DOCKER_REFERENCE.match(spec.image) and len(spec.image) <= 255, spec.image
    assert 6 << 20 <= spec.memory <= LIMITS.host_memory
    assert 0.01 <= spec.cpus <= LIMITS.host_cpus and math.isfinite(spec.cpus)
    assert 16 <= spec.pids_limit < 2**31
    assert spec.network == "none"  # this node allows no other
    assert all("\x00" not in k + v and "=" not in k for k, v in spec.env.items())
    assert spec.workdir is None or (spec.workdir.startswith("/") and "\x00" not in spec.workdir)
    docker.types.HostConfig(version=API_VERSION, **host_config_kwargs(spec, binds=None))


def check_timeout(timeout) -> None:
    assert timeout is None or (math.isfinite(timeout) and 0 < timeout <= MAX_TIMEOUT)


def check_id(value: str) -> None:
    assert ID_RE.match(value) and "\n" not in value
    assert CONTAINER_NAME.match(f"jr-node-s-{safe_name(value)}")


ACCEPTED = {"executions": 0, "sessions": 0, "jobs": 0}
EXECUTIONS = SimpleNamespace(
    limits=LIMITS, default_image=DEFAULT_IMAGE, default_timeout=1800.0, node_id="node"
)
SESSIONS = SimpleNamespace(limits=LIMITS, default_image=DEFAULT_IMAGE, idle_timeout=3600.0)
JOBS = SimpleNamespace(limits=LIMITS, default_image=DEFAULT_IMAGE)


def accepted(model, body):
    """The typed body, or None when it is a 400 (the only refusal allowed)."""
    try:
        return parse_body(model, body)
    except BadRequest as exc:
        assert exc.status == 400 and exc.reason.startswith("bad_"), exc.to_json()
        return None


@PROPS
@given(with_a_command(EXECUTION_FIELDS, ("execution_id",)))
def test_every_accepted_execution_can_run(body):
    typed = accepted(ExecutionBody, body)
    if typed is None:
        return
    check_id(typed.execution_id)
    if typed.session_id is not None:
        check_id(typed.session_id)
    check_timeout(typed.timeout)
    typed.session_id = None  # fresh: the path that builds a container from the body
    try:
        ex = ExecutionManager.parse(EXECUTIONS, typed)
    except BadRequest:
        return
    ACCEPTED["executions"] += 1
    check_timeout(ex.timeout)
    assert ex.timeout is not None  # null or absent is the default, never "no limit"
    check_container(ex.spec)
    assert ex.argv and all(isinstance(a, str) and "\x00" not in a for a in ex.argv)
    assert ex.stdin is None or isinstance(ex.stdin, bytes)
    assert command_of(typed) == (ex.argv, ex.stdin)


@PROPS
@given(bodies(SESSION_FIELDS))
def test_every_accepted_session_makes_a_container_docker_takes(body):
    typed = accepted(SessionBody, body)
    if typed is None:
        return
    if typed.session_id is not None:
        check_id(typed.session_id)
    idle = typed.idle_timeout
    assert idle is None or (math.isfinite(idle) and idle >= 0)
    try:
        sid, spec, idle = SessionManager.parse(SESSIONS, typed)
    except BadRequest:
        return
    ACCEPTED["sessions"] += 1
    check_id(sid)
    assert math.isfinite(idle) and idle >= 0
    check_container(spec)


@PROPS
@given(with_a_command(JOB_FIELDS), st.lists(with_a_command(TASK_FIELDS), max_size=3) | st.none())
def test_every_accepted_job_has_finite_timeouts_and_buildable_tasks(body, tasks):
    if tasks is not None:
        body = {**body, "tasks": tasks}
    typed = accepted(JobBody, body)
    if typed is None:
        return
    if typed.job_id is not None:
        check_id(typed.job_id)
    try:
        job = JobManager.parse(JOBS, typed)
    except BadRequest as exc:
        assert (
            exc.status == 400 and exc.reason.startswith("bad_") or exc.reason.startswith("network")
        ), exc.to_json()
        return
    ACCEPTED["jobs"] += 1
    check_id(job["job_id"])
    for task in job["tasks"]:
        check_timeout(task["timeout"])
        assert task["argv"] and all(isinstance(a, str) for a in task["argv"])
        check_container(ContainerSpec(**task["spec"]))


def test_the_properties_saw_accepted_bodies():
    """Not vacuous: each property above met bodies the agent accepts (run after them)."""
    print(f"\naccepted bodies: {ACCEPTED}")
    assert all(ACCEPTED[k] >= 20 for k in ("executions", "sessions", "jobs")), ACCEPTED


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), 1e308, 2**64, 1e10])
def test_no_field_takes_a_non_finite_or_huge_number(value):
    for field in ("timeout", "cpus", "pids_limit", "memory"):
        body = {"execution_id": "e1", "command": "true", field: value}
        assert accepted(ExecutionBody, body) is None, field
    assert accepted(SessionBody, {"idle_timeout": value}) is None


def test_cancel_of_an_execution_whose_exit_is_out_is_a_conflict():
    """`finish` sets `done` (the exit event is out) before it drops the execution from
    `running`: a cancel in between is a 409 like any finished one (a CI flake once)."""
    ex = Execution(execution_id="e-1", node_id="node", argv=["true"], mode="session", image="i")
    ex.status, ex.returncode = "cancelled", -15
    ex.done.set()
    manager = SimpleNamespace(running={"e-1": ex}, kill=lambda *a: pytest.fail("killed again"))
    with pytest.raises(Conflict) as err:
        ExecutionManager.cancel(manager, "e-1")
    assert err.value.reason == "not_running"
    assert err.value.details["execution"]["status"] == "cancelled"
