"""The papermill kernel client that does not hang on a lost ZeroMQ wake-up (pipeline/nbexec.py).

A lost edge is simulated with a socket whose asyncio poll never wakes when it has no timeout and, with one,
sees the message only when it expires: exactly what the stalled lesson-03 runs showed (the reply was in the
socket; the client read it when its 60 s timeout expired)."""
from __future__ import annotations

import asyncio
import time
from queue import Empty

import nbformat
import pytest
import zmq
import zmq.asyncio
from jupyter_client.channels import AsyncZMQSocketChannel
from jupyter_client.session import Session

from pipeline import nbexec


class LostEdgeSocket(zmq.asyncio.Socket):
    async def poll(self, timeout=None, flags=zmq.POLLIN):  # type: ignore[override]
        if timeout is None:
            await asyncio.Event().wait()  # the wake-up never comes
        await asyncio.sleep(timeout / 1000)
        return self.get(zmq.EVENTS) & flags  # the last look, when the poll times out


@pytest.fixture()
def pair():
    """(our end: an asyncio socket that loses its wake-ups, the kernel's end: a plain socket)."""
    context = zmq.asyncio.Context()
    ours = context.socket(zmq.PAIR, socket_class=LostEdgeSocket)
    ours.bind("inproc://nbexec-test")
    theirs = zmq.Context.shadow(context.underlying).socket(zmq.PAIR)
    theirs.connect("inproc://nbexec-test")
    yield ours, theirs
    ours.close(linger=0)
    theirs.close(linger=0)
    context.term()


def run(coroutine):
    return asyncio.run(coroutine)


def test_the_simulated_lost_edge_hangs_the_stock_channel(pair):
    ours, theirs = pair
    session = Session()
    session.send(theirs, "execute_reply", {"status": "ok"})
    with pytest.raises(asyncio.TimeoutError):
        run(asyncio.wait_for(AsyncZMQSocketChannel(ours, session).get_msg(), 2.0))


def test_the_sliced_channel_reads_a_reply_whose_wake_up_was_lost(pair):
    ours, theirs = pair
    session = Session()
    session.send(theirs, "execute_reply", {"status": "ok"})
    msg = run(asyncio.wait_for(nbexec.SlicedChannel(ours, session).get_msg(), 3.0))
    assert msg["msg_type"] == "execute_reply" and msg["content"] == {"status": "ok"}


def test_the_sliced_channel_keeps_the_callers_timeout(pair):
    ours, _ = pair
    started = time.monotonic()
    with pytest.raises(Empty):
        run(nbexec.SlicedChannel(ours, Session()).get_msg(timeout=1.2))
    assert time.monotonic() - started >= 1.2


def test_a_silent_kernel_is_nudged_once_and_the_answer_to_the_nudge_is_swallowed(pair, monkeypatch):
    monkeypatch.setattr(nbexec, "NUDGE_S", 0.3)
    ours, theirs = pair
    session = Session()
    channel = nbexec.NudgingShellChannel(ours, session)
    with pytest.raises(Empty):
        run(channel.get_msg(timeout=1.6))  # silent for 1.6 s: several NUDGE_S, one nudge outstanding at a time
    sent = []
    while theirs.poll(0):
        sent.append(session.deserialize(session.feed_identities(theirs.recv_multipart())[1]))
    assert [m["msg_type"] for m in sent] == ["kernel_info_request"]
    session.send(theirs, "kernel_info_reply", {"status": "ok"}, parent=sent[0])
    session.send(theirs, "execute_reply", {"status": "ok", "execution_count": 7})
    msg = run(asyncio.wait_for(channel.get_msg(), 3.0))
    assert msg["msg_type"] == "execute_reply" and msg["content"]["execution_count"] == 7
    assert channel.nudge_id is None  # answered: the next silence may nudge again


def test_papermill_runs_a_notebook_through_the_sliced_client_and_a_nudge_changes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(nbexec, "NUDGE_S", 0.5)
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.cells = [nbformat.v4.new_code_cell("x = 2", metadata={"tags": ["parameters"]}),
                      nbformat.v4.new_code_cell("import time\ntime.sleep(2.0)\nprint('slept', x)"),
                      nbformat.v4.new_code_cell("print('after', x * 21)")]
    source, output = tmp_path / "in.ipynb", tmp_path / "out.ipynb"
    nbformat.write(notebook, str(source))
    before = nbexec.nudges_sent
    nbexec.execute_notebook(source, output, {"x": 3}, cwd=tmp_path)
    cells = [c for c in nbformat.read(str(output), as_version=4).cells if c.cell_type == "code"]
    texts = ["".join(o.get("text", "") for o in c.outputs) for c in cells]
    assert texts[-2:] == ["slept 3\n", "after 63\n"]  # the parameter cell papermill injected came first
    assert [c.execution_count for c in cells] == list(range(1, len(cells) + 1))
    assert nbexec.nudges_sent > before  # the 2 s cell was silent for more than NUDGE_S
