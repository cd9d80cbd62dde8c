"""Signals before a container's command runs (rootless.runtime.interrupt): a raise that Python
swallows (in a __del__ or a weakref callback, as its import system runs) is still acted on,
and the signal queue records what arrives while the stopping signals are blocked."""

from __future__ import annotations

import os
import signal
import sys

import pytest

from rootless.runtime import interrupt
from rootless.runtime.interrupt import STOPPING, Interrupted, SignalQueue


@pytest.fixture
def restore_signals():
    saved = {sig: signal.getsignal(sig) for sig in interrupt.FORWARDED}
    hook = sys.unraisablehook
    yield
    signal.set_wakeup_fd(-1)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPPING)
    for sig, handler in saved.items():
        signal.signal(sig, handler)
    sys.unraisablehook = hook


def test_interrupted_says_which_signal_and_exits_128_plus_n():
    assert Interrupted(signal.SIGTERM).exit_code == 143
    assert Interrupted(signal.SIGHUP).message == "interrupted by SIGHUP"
    assert Interrupted(signal.SIGINT).message == "interrupted"


def test_a_raise_swallowed_in_a_finaliser_reaches_the_signal_queue(restore_signals, capfd):
    interrupt.raise_on_signals()

    class Finalised:
        def __del__(self) -> None:
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(10000):  # the handler runs between two bytecodes, here
                pass

    obj = Finalised()
    del obj  # the Interrupted raised inside __del__ is "unraisable": Python drops it
    assert interrupt.received_before() == [signal.SIGTERM]
    assert "Exception ignored" not in capfd.readouterr().err
    queue = SignalQueue()
    assert queue.take() == [signal.SIGTERM]  # the launcher's first check stops the start-up


def test_a_second_signal_during_clean_up_is_recorded_not_raised(restore_signals):
    interrupt.raise_on_signals()
    with pytest.raises(Interrupted):
        os.kill(os.getpid(), signal.SIGHUP)
        for _ in range(10000):
            pass
    os.kill(os.getpid(), signal.SIGTERM)  # no raise: the clean-up runs to its end
    for _ in range(10000):
        pass
    assert interrupt.received_before() == [signal.SIGHUP, signal.SIGTERM]


def test_a_signal_that_waited_while_blocked_lands_in_the_queue(restore_signals):
    interrupt.raise_on_signals()
    interrupt.defer()
    os.kill(os.getpid(), signal.SIGTERM)  # pending in the kernel: no raise here
    queue = SignalQueue()
    interrupt.unblock()
    for _ in range(10000):
        pass
    assert queue.take() == [signal.SIGTERM]
