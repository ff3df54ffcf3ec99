"""A container's files, two ways behind one interface: Docker's archive API (any image) or
the container's runner (runner sessions whose runner does files: dockerd tars nothing)."""

from __future__ import annotations

import logging
import time

from docker.errors import DockerException
from docker.errors import NotFound as DockerNotFound

from jupyter_remote.agent.docker_io import archive_chunks, path_stat, put_archive
from jupyter_remote.agent.runner_client import (
    RunnerClient,
    RunnerError,
    RunnerRefused,
    RunnerUnavailable,
)
from jupyter_remote.protocol.errors import Conflict, NotFound
from jupyter_remote.protocol.tarstream import StreamCheck

log = logging.getLogger("jupyter_remote.agent")


def docker_error(exc: DockerException, path: str):
    """Docker's refusal about a container path, as our 404 or 409."""
    if isinstance(exc, DockerNotFound):
        return NotFound(
            f"no such path in the container: {path}", reason="path_not_found", path=path
        )
    why = getattr(exc, "explanation", None) or str(exc)
    return Conflict(f"the container refused {path}: {why}", reason="transfer_refused", path=path)


def _exec(api, cid: str, argv: list[str]) -> int:
    """Run `argv` as root in the container (blocking); its exit code (126/127: not found)."""
    exec_id = api.exec_create(cid, argv, user="0", stdout=True, stderr=True)["Id"]
    api.exec_start(exec_id)
    return api.exec_inspect(exec_id).get("ExitCode") or 0


_CAN_STAGE: dict[str, bool] = {}


def can_stage(api, cid: str) -> bool:
    """Whether the container has `mv` and `rm` (probed once per container)."""
    if cid not in _CAN_STAGE:
        if len(_CAN_STAGE) > 1000:
            _CAN_STAGE.clear()
        try:
            ok = all(_exec(api, cid, [t, "--help"]) not in (126, 127) for t in ("mv", "rm"))
        except DockerException:
            ok = False
        _CAN_STAGE[cid] = ok
    return _CAN_STAGE[cid]


def _remove(api, cid: str, path: str) -> None:
    """Remove a staging path; Docker may still be finishing an aborted put, so check."""
    for _ in range(20):
        try:
            _exec(api, cid, ["rm", "-rf", path])
            if path_stat(api, cid, path) is None:
                return
        except DockerException as exc:
            log.warning("could not remove %s in %s: %s", path, cid[:12], exc)
            return
        time.sleep(0.1)
    log.warning("could not remove %s in %s", path, cid[:12])


class DockerFiles:
    """A container's files through Docker's archive API (any image; dockerd tars)."""

    def __init__(self, api, cid: str) -> None:
        self.api, self.cid = api, cid

    def stat(self, path: str) -> dict | None:
        st = path_stat(self.api, self.cid, path)
        return None if st is None else {"dir": bool(st.get("mode", 0) & (1 << 31))}

    def can_stage(self) -> bool:
        return can_stage(self.api, self.cid)

    @staticmethod
    def encode(check: StreamCheck, top: str):
        return check.rewritten(top)

    def put(self, into: str, pieces) -> None:
        put_archive(self.api, self.cid, into, pieces)

    def move(self, src: str, dst: str) -> None:
        code = _exec(self.api, self.cid, ["mv", "-f", src, dst])
        if code:
            raise Conflict(
                f"the container refused {dst}: mv exited with {code}",
                reason="transfer_refused",
                path=dst,
            )

    def remove(self, path: str) -> None:
        _remove(self.api, self.cid, path)

    def chunks(self, path: str):
        return archive_chunks(self.api, self.cid, path)


class RunnerFiles:
    """A container's files through its runner (docs/runner.md, "Files"): the runner writes
    and reads them itself, so dockerd tars nothing (its CPU was most of a transfer's)."""

    def __init__(self, runner: RunnerClient) -> None:
        self.runner = runner

    def _call(self, what: str, path: str, fn, *args):
        try:
            return fn(*args)
        except RunnerRefused as exc:
            if exc.reason == "path_not_found":
                raise NotFound(exc.message, reason="path_not_found", path=path) from None
            raise Conflict(
                f"the container refused {path}: {exc.message}", reason="transfer_refused", path=path
            ) from None
        except RunnerUnavailable as exc:
            raise Conflict(
                f"the container's runner could not {what} {path}: {exc}",
                reason="transfer_refused",
                path=path,
            ) from None

    def stat(self, path: str) -> dict | None:
        st = self._call("look at", path, self.runner.stat, path)
        return {"dir": st["dir"]} if st["exists"] else None

    @staticmethod
    def can_stage() -> bool:
        return True

    @staticmethod
    def encode(check: StreamCheck, top: str):
        return check.framed(top)

    def put(self, into: str, pieces) -> None:
        self._call("write to", into, self.runner.put, into, pieces)

    def move(self, src: str, dst: str) -> None:
        self._call("move", dst, self.runner.rename, src, dst)

    def remove(self, path: str) -> None:
        """Remove a refused upload's staging path (the runner has stopped writing it: put
        returns only after its answer)."""
        try:
            self.runner.remove(path)
        except RunnerError as exc:
            log.warning("could not remove %s: %s", path, exc)

    def chunks(self, path: str):
        return self._call("read", path, self.runner.get, path)


_RUNNER_FILES: dict[str, bool] = {}


def files_of(api, session) -> DockerFiles | RunnerFiles:
    """The runner for a runner session whose runner does files (version 2 on), else Docker."""
    runner = session.runner
    if runner is not None:
        known = _RUNNER_FILES.get(session.runner_dir)
        if known is None:
            try:
                known = int(runner.status(timeout=5.0).get("version", 1)) >= 2
            except (RunnerError, ValueError):
                known = False
            if len(_RUNNER_FILES) > 1000:
                _RUNNER_FILES.clear()
            _RUNNER_FILES[session.runner_dir] = known
        if known:
            return RunnerFiles(runner)
    return DockerFiles(api, session.container_id)
