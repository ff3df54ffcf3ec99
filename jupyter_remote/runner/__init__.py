"""The runner: a small stdlib-only process inside each session container (see docs/runner.md).

On the host only ``jupyter_remote.agent.runner_client`` is imported; the rest of this directory is
bind-mounted read-only into containers and run there with the image's own ``python3``.
"""
