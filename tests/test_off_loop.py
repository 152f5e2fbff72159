"""app/utils/off_loop.py's start_daemon: a thread where threads are real, a bare greenlet under gevent."""

from __future__ import annotations

import textwrap
import threading
from pathlib import Path

from app.utils.off_loop import start_daemon
from tests.fresh_app import run_in_fresh_app


def test_without_gevent_the_target_runs_in_a_daemon_thread_of_that_name():
    seen: list[threading.Thread] = []
    done = threading.Event()

    def target() -> None:
        seen.append(threading.current_thread())
        done.set()

    start_daemon(target, name="relay-test")
    assert done.wait(5)
    assert seen[0].name == "relay-test" and seen[0].daemon and seen[0] is not threading.main_thread()


_UNDER_GEVENT = textwrap.dedent(
    """
    from gevent import monkey
    monkey.patch_all()

    import threading

    import gevent
    from app.utils.off_loop import start_daemon

    ran = []
    release = threading.Event()

    def target():
        ran.append(1)
        release.wait()

    start_daemon(target, name="relay-test")
    print(len(ran))  # the caller went on without switching to the event loop
    gevent.sleep(0)
    print(len(ran), sum(t.name == "relay-test" for t in threading.enumerate()))
    release.set()
    gevent.sleep(0)
    """
)


def test_under_gevent_the_target_is_a_greenlet_started_without_a_switch(tmp_path: Path):
    # threading.Thread under gevent is a greenlet too, but its start() waits for the new one to run, a trip
    # through the event loop on every stream's path.
    before_switch, after = run_in_fresh_app(_UNDER_GEVENT, tmp_path).splitlines()
    assert before_switch == "0"
    ran, threads_named = after.split()
    assert ran == "1" and threads_named == "0"
