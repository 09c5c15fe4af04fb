"""Run a notebook with papermill, with a kernel client that does not hang on a lost message.

papermill (through nbclient) sends each cell as an `execute_request` and waits for its `execute_reply` with an
asyncio poll on a ZeroMQ socket, with no timeout unless an execution timeout is set. ZeroMQ signals a waiting
message through an edge-triggered file descriptor, and when that edge is lost nothing wakes up. Lesson 03 (a
cell that drives a live ipywidgets dashboard, then the next cell) hung this way in about one papermill run in
six here, with ipykernel 7.4 and 6.31 alike, in two forms:

- the reply was in the client's socket, unread: the kernel had finished the cell in a second and sat idle;
  the client woke when its 60 s timeout expired (a poll that times out looks at the socket once more) or,
  with no timeout, when CI killed it;
- the request was in the kernel's socket, unread: no `busy`, no output, the kernel idle. Any later message on
  that socket wakes the kernel's reader, and then it reads both.

So the client here never waits more than `SLICE_S` in one poll (a lost edge on our side costs at most that),
and when the kernel has been silent on the shell channel for `NUDGE_S` it sends it one `kernel_info_request`
(harmless: the kernel answers it after the running cell, and this channel swallows the reply). A cell may
still run for as long as it needs; the caller's timeout, if any, is kept whole.
"""
from __future__ import annotations

import time
from pathlib import Path
from queue import Empty
from typing import Any

from jupyter_client.asynchronous.client import AsyncKernelClient
from jupyter_client.channels import AsyncZMQSocketChannel
from jupyter_client.manager import AsyncKernelManager
from traitlets import DottedObjectName, Type

SLICE_S = 0.5
NUDGE_S = 5.0
nudges_sent = 0  # in this process: how often a silent kernel was nudged (the tests read it)


class SlicedChannel(AsyncZMQSocketChannel):
    """A channel whose `get_msg` polls in slices of at most `SLICE_S` seconds, up to the caller's timeout."""

    async def get_msg(self, timeout: float | None = None) -> dict[str, Any]:  # type: ignore[override]
        deadline = None if timeout is None else time.monotonic() + timeout
        quiet_since = time.monotonic()
        while True:
            left = SLICE_S if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                msg = await super().get_msg(timeout=min(SLICE_S, left))
            except Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    raise
                if time.monotonic() - quiet_since >= NUDGE_S:
                    self.quiet_for_long()
                    quiet_since = time.monotonic()
                continue
            if self.keep(msg):
                return msg
            quiet_since = time.monotonic()

    def quiet_for_long(self) -> None:
        """Called after `NUDGE_S` seconds without a message."""

    def keep(self, msg: dict[str, Any]) -> bool:
        """Whether `get_msg` returns `msg` (or drops it and waits for the next)."""
        return True


class NudgingShellChannel(SlicedChannel):
    """The shell channel: after `NUDGE_S` seconds of silence, one `kernel_info_request` (one at a time)."""

    nudge_id: str | None = None

    def quiet_for_long(self) -> None:
        global nudges_sent
        if self.nudge_id is None:
            msg = self.session.msg("kernel_info_request")
            self.nudge_id = msg["header"]["msg_id"]
            self.send(msg)
            nudges_sent += 1

    def keep(self, msg: dict[str, Any]) -> bool:
        if self.nudge_id is not None and msg.get("parent_header", {}).get("msg_id") == self.nudge_id:
            self.nudge_id = None
            return False
        return True


class SlicedKernelClient(AsyncKernelClient):
    shell_channel_class = Type(NudgingShellChannel)   # type: ignore[assignment]
    iopub_channel_class = Type(SlicedChannel)   # type: ignore[assignment]


class SlicedKernelManager(AsyncKernelManager):
    client_class = DottedObjectName("pipeline.nbexec.SlicedKernelClient")
    client_factory = Type(SlicedKernelClient)   # type: ignore[assignment]  (AsyncKernelManager sets both)


def execute_notebook(source: Path, output: Path, parameters: dict[str, Any], *, cwd: Path,
                     log_output: bool = False) -> None:
    """papermill.execute_notebook on the python3 kernel, quiet, with the sliced client."""
    import papermill

    papermill.execute_notebook(str(source), str(output), parameters=parameters, kernel_name="python3",
                               progress_bar=False, log_output=log_output,
                               extra_arguments=["--IPKernelApp.log_level=ERROR"], cwd=str(cwd),
                               kernel_manager_class=SlicedKernelManager)
