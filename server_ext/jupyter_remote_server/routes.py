"""The one route table of /remote/api: every URL and the handler that answers it."""

from __future__ import annotations

from jupyter_server.utils import url_path_join

from jupyter_remote_server.handlers import executions, jobs, meta, nodes, sessions, transfers

PREFIX = "/remote/api"
ID = r"([^/]+)"

ROUTES: list[tuple[str, type]] = [
    ("openapi.json", meta.OpenAPIHandler),
    ("status", meta.StatusHandler),
    ("engine-states", meta.EngineStatesHandler),
    ("nodes", nodes.NodesHandler),
    ("nodes/join", nodes.JoinHandler),
    (f"nodes/{ID}", nodes.NodeHandler),
    ("executions", executions.ExecutionsHandler),
    (f"executions/{ID}", executions.ExecutionHandler),
    (f"executions/{ID}/events", executions.ExecutionEventsHandler),
    (f"executions/{ID}/cancel", executions.ExecutionCancelHandler),
    ("notebook-cells", executions.NotebookCellsHandler),
    (f"kernels/{ID}/sessions", sessions.KernelSessionsHandler),
    ("sessions", sessions.SessionsHandler),
    (f"sessions/{ID}", sessions.SessionOwnerHandler),
    (f"sessions/{ID}/files", transfers.SessionFilesHandler),
    ("jobs", jobs.JobsHandler),
    (f"jobs/{ID}", jobs.JobHandler),
    (f"jobs/{ID}/wait", jobs.JobWaitHandler),
    (f"jobs/{ID}/stop", jobs.JobStopHandler),
    (f"jobs/{ID}/logs", jobs.JobLogsHandler),
    (f"jobs/{ID}/tasks/{ID}/outputs", transfers.JobOutputsHandler),
]


def handlers() -> list[tuple[str, type]]:
    """The routes under /remote/api, as ExtensionApp.handlers takes them (it adds base_url)."""
    return [(url_path_join(PREFIX, path), handler) for path, handler in ROUTES]
