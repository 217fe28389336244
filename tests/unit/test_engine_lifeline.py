"""The engine lifeline without vLLM: identity parsing, who arms, and plain child
processes (forked and spawned, as vLLM starts its engine core) dying with a
SIGKILLed or silently exiting owner."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from llmd_ray.engine import lifeline
from llmd_ray.engine.lifeline import OWNER_ENV, Owner, ProcStat

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the lifeline reads /proc")


def _wait(cond, timeout: float, what: str) -> float:
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.01)
    return time.monotonic() - t0


def test_owner_round_trips_and_rejects_garbage():
    assert Owner.decode(Owner(123, 456789).encode()) == Owner(123, 456789)
    for bad in (None, "", "123", "abc:1", "1:abc", ":5", "0:5", "-3:5", "1:2:3"):
        assert Owner.decode(bad) is None, bad


def test_parse_stat_handles_awkward_command_names():
    rest = " ".join(["S"] + [str(i) for i in range(4, 22)] + ["987654", "1", "2"])
    assert lifeline.parse_stat(f"42 (VLLM::Engine) (x) {rest}") == ProcStat("S", 987654)
    assert lifeline.parse_stat(f"42 (a b) {rest.replace('S', 'Z', 1)}").exited
    assert lifeline.parse_stat("42 (short) S 1 2") is None
    assert lifeline.parse_stat("garbage") is None


def test_identity_and_liveness_of_real_processes():
    me = lifeline.identity(os.getpid())
    assert me is not None and lifeline.is_alive(me)
    assert not lifeline.is_alive(Owner(me.pid, me.start_ticks + 1))  # same pid, another process
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert lifeline.identity(child.pid) is None or not lifeline.is_alive(lifeline.identity(child.pid))


def test_only_processes_of_another_owner_arm():
    assert lifeline.owner_to_watch({}, 10) is None
    assert lifeline.owner_to_watch({OWNER_ENV: "junk"}, 10) is None
    assert lifeline.owner_to_watch({OWNER_ENV: "10:5"}, 10) is None  # the owner itself
    assert lifeline.owner_to_watch({OWNER_ENV: "10:5"}, 11) == Owner(10, 5)


@pytest.mark.parametrize("pidfd", [True, False], ids=["pidfd", "proc-poll"])
def test_wait_for_exit_returns_when_the_owner_dies(monkeypatch, pidfd):
    if not pidfd:
        monkeypatch.delattr(os, "pidfd_open", raising=False)
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    owner = lifeline.identity(proc.pid)
    done = threading.Event()
    threading.Thread(target=lambda: (lifeline.wait_for_exit(owner, poll_s=0.01), done.set()), daemon=True).start()
    assert not done.wait(0.3)  # a live owner keeps it waiting
    proc.kill()  # left a zombie on purpose (not reaped yet): it must count as gone
    _wait(done.is_set, 5, "wait_for_exit to return")
    proc.wait()
    assert lifeline.wait_for_exit(owner) is None  # an owner already gone returns at once


# A stand-in for a replica: claim, start children the way vLLM does, report their pids, then idle.
_OWNER = textwrap.dedent(
    """
    import multiprocessing as mp, os, sys, time
    from llmd_ray.engine import lifeline

    def engine_core(spawned):
        if spawned:
            lifeline.vllm_plugin()  # what vLLM's general-plugin loading does in a spawned process
        time.sleep(120)

    if __name__ == "__main__":
        kids = [mp.get_context(m).Process(target=engine_core, args=(m == "spawn",)) for m in ("fork", "spawn")]
        with lifeline.claim():
            for k in kids:
                k.start()
        assert lifeline.OWNER_ENV not in os.environ
        deadline = time.monotonic() + 30  # report once the children armed (their watchdog thread runs)
        while any(len(os.listdir(f"/proc/{k.pid}/task")) < 2 for k in kids) and time.monotonic() < deadline:
            time.sleep(0.01)
        print(" ".join(str(k.pid) for k in kids), flush=True)
        sys.stdin.readline()
        os._exit(0)  # exit without shutting anything down
    """
)


def test_claim_is_scoped_reentrant_and_restores_the_environment(monkeypatch):
    monkeypatch.setenv(OWNER_ENV, "1:1")  # e.g. inherited from an owner up the tree
    me = lifeline.identity(os.getpid())
    with lifeline.claim() as outer:
        assert outer == me and os.environ[OWNER_ENV] == me.encode()
        with lifeline.claim():
            assert os.environ[OWNER_ENV] == me.encode()
        assert os.environ[OWNER_ENV] == me.encode()  # the outer engine is still starting
    assert os.environ[OWNER_ENV] == "1:1"
    monkeypatch.delenv(OWNER_ENV)
    with lifeline.claim():
        pass
    assert OWNER_ENV not in os.environ


def test_a_child_forked_after_the_claim_does_not_arm():
    with lifeline.claim():
        pass
    pid = os.fork()  # the at-fork hook is registered now; it must find nothing to watch
    if pid == 0:
        os._exit(0 if lifeline._armed_in_pid != os.getpid() and threading.active_count() == 1 else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def _gone(pid: int) -> bool:
    stat = lifeline.read_stat(pid)
    return stat is None or stat.exited


@pytest.mark.parametrize("how", ["sigkill", "exit"])
def test_children_die_with_their_owner(tmp_path, how):
    script = tmp_path / "owner.py"
    script.write_text(_OWNER)
    owner = subprocess.Popen(
        [sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    try:
        pids = [int(p) for p in owner.stdout.readline().split()]
        assert len(pids) == 2 and not any(_gone(p) for p in pids)
        if how == "sigkill":
            owner.send_signal(signal.SIGKILL)
        else:
            owner.stdin.write("bye\n")
            owner.stdin.flush()
        owner.wait(10)
        took = _wait(lambda: all(_gone(p) for p in pids), 5, "the children to die")
        print(f"children gone {took * 1000:.0f} ms after the owner")
    finally:
        owner.kill()
        owner.wait()
