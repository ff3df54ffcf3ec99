"""%remote_nodes (the pool: show, add, remove) and %remote_states (inference engines)."""

from __future__ import annotations

import os

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import display

from jupyter_remote.kernel.client import RemoteClient
from jupyter_remote.kernel.magics.args import UsesRemote, one_line_errors


@magics_class
class NodeMagics(UsesRemote):
    """The pool of nodes behind the server."""

    @magic_arguments()
    @argument("--add", metavar="URL", help="Add the agent at URL to the pool.")
    @argument("--token", help="The agent's token (with --add).")
    @argument("--remove", metavar="NODE_ID", help="Remove a node from the pool.")
    @line_magic
    def remote_nodes(self, line: str):
        """Show the pool's nodes (state, CPU / memory / disk, running work), refreshing.

        Examples::

            %remote_nodes
            %remote_nodes --add http://gpu-1:9527 --token s3cret
            %remote_nodes --remove gpu-1
        """
        from jupyter_remote.kernel.widgets import NodesWidget

        args = parse_argstring(self.remote_nodes, line)
        with one_line_errors():
            client = self.client
            if args.add:
                node = client.add_node(args.add, args.token)
                print(f"added node {node['node_id']} ({node['state']})")
            if args.remove:
                client.remove_node(args.remove)
                print(f"removed node {args.remove}")
            if not (args.add or args.remove):
                widget = NodesWidget(client)
                display(widget)
                widget.start()


@magics_class
class EngineStateMagics(Magics):
    """%remote_states: the latest inference-engine states."""

    @magic_arguments()
    @argument("--log", metavar="PATH", help="Read a gateway's JSONL log instead of the server.")
    @argument("--stale-ms", type=int, default=2000, help="Stale after this many ms (log only).")
    @argument("--sort", default="engine_id", help="Column to sort by.")
    @line_magic
    def remote_states(self, line: str):
        """Show the latest state per engine (age, stale flag, KV-cache use), refreshing.

        From the server's engine-state gateway (c.RemoteApp.gateway_port), or from a
        `jupyter-remote gateway` log with --log.

        Examples::

            %remote_states
            %remote_states --log /data/engine_states.jsonl --stale-ms 5000 --sort age_ms
        """
        from jupyter_remote.kernel.widgets import ENGINE_COLUMNS, EngineStateWidget

        args = parse_argstring(self.remote_states, line)
        if args.sort not in ENGINE_COLUMNS:
            raise UsageError(f"--sort takes one of {', '.join(ENGINE_COLUMNS)}")
        if args.log and not os.path.exists(args.log):
            raise UsageError(f"[remote] no engine-state log at {args.log}")
        with one_line_errors():
            source = args.log or RemoteClient()
            widget = EngineStateWidget(source, args.stale_ms, args.sort)
            widget.refresh()
        display(widget)
        widget.start()
