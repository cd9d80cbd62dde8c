"""The sync channel between the launcher and PID 1 (rootless.primitives.channel): a message
sent before the peer went away is read, whatever the launcher sent in the meantime."""

from __future__ import annotations

from rootless.primitives.channel import Channel


def test_an_error_sent_before_the_peer_closed_is_read_though_the_peer_left_ours_unread():
    """PID 1 fails its set-up, sends its error and exits while the launcher's "go" (sent after
    the network came up) sits unread in its queue. The kernel then reports ECONNRESET to the
    launcher's next read, before the data queued for it: that read was taken for end of file
    (execve succeeded), the error was lost, `rl run` exited 125 without a word and `rl run -d`
    printed the id of a container that never ran (the fault campaign, with --network)."""
    launcher, pid1 = Channel.pair()
    pid1.send("error", message="set the hostname: Invalid argument (EINVAL)", exit_code=125)
    launcher.send("go")
    pid1.close()
    msg = launcher.recv()
    assert msg is not None and msg["op"] == "error", msg
    assert launcher.recv() is None  # and then the end of file


def test_a_peer_that_closed_with_our_message_unread_and_nothing_sent_is_end_of_file():
    launcher, pid1 = Channel.pair()
    launcher.send("go")
    pid1.close()
    assert launcher.recv() is None
    assert launcher.recv() is None
