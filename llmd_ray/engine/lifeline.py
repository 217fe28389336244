"""Engine lifeline: every vLLM engine process dies with the process that started it.

vLLM's ``AsyncLLM`` runs its engine core in a child process (``VLLM::EngineCore``,
plus, for TP > 1, worker processes under it). Nothing in the engine core watches
its parent: when the parent (a Serve replica's Ray worker) is SIGKILLed, e.g. by
``ray stop --force``, the engine lives on with its weights and KV cache until the
machine runs out of memory. In a container the runtime ends it; on a VM or bare
metal nothing does. Ray reaps it when a replica's worker dies under a live raylet,
not after ``ray stop --force``.

How: while ``Engine.start`` builds the ``AsyncLLM`` (in the replica process), the
context manager :func:`claim` puts the replica's identity, ``pid:starttime`` from
``/proc/<pid>/stat``, into ``LLMD_RAY_ENGINE_OWNER``. Every engine process started
meanwhile inherits it and calls :func:`arm`, which starts a daemon thread that
blocks on a ``pidfd`` of the owner (readable the moment the owner exits, no
polling; a 0.2 s ``/proc`` poll where ``pidfd_open`` is missing) and then SIGKILLs
its own process. ``arm`` is reached two ways, because the engine core is started
with ``fork`` (vLLM's choice outside Ray; ours on CPU, ``EngineConfig.engine_core_start``)
or ``spawn`` (vLLM's choice inside a Ray actor, ``_maybe_force_spawn``; ours on GPU):

- spawn: the ``vllm.general_plugins`` entry point ``llmd_ray_lifeline`` runs in every
  vLLM process (``EngineCore.__init__``, workers' ``WorkerWrapperBase``); in the
  owner itself it is a no-op (the owner's pid is its own).
- fork: a forked child inherits the parent's "plugins already loaded" flag, so the
  plugin never runs there; an ``os.register_at_fork(after_in_child=arm)`` hook,
  registered by :func:`claim` and :func:`arm`, covers it.

Why only while the engine is built: the variable must reach the engine's processes
and nothing else. Left in the replica's environment it would also reach processes
that are not its descendants (a Ray cluster started from that process, a
``serve run`` started by a test) and any of those that loads vLLM's plugins would
then die with a process that is not its parent. Engine processes started later
(the workers of an armed engine core) inherit it from their own parents.

Why not ``prctl(PR_SET_PDEATHSIG, SIGKILL)``: the kernel sends that signal when the
parent *thread* that forked the child exits, not the parent process. ``Engine.start``
builds the ``AsyncLLM`` in ``asyncio.to_thread``, i.e. in a thread of the event
loop's default executor, and that thread ends whenever its executor is shut down
(``loop.close()``, ``asyncio.run`` returning, a test's loop ending) while the process,
and the engine it still serves, live on: PDEATHSIG would then kill a healthy engine.
The watchdog thread depends only on the owner process.

Why ``pid:starttime``: the owner may already be dead by the time the child arms
(engine start-up takes seconds), and its pid may then belong to another process.
The start time (clock ticks since boot) tells them apart; the pidfd is opened
first and the identity checked after, so the fd surely refers to the owner.

Limits: the engine core arms only once vLLM loads plugins (``EngineCore.__init__``,
after its start-up handshake); if the owner dies before that, the child exits on
its own when the handshake times out (vLLM's 5 minutes) or dies on arming. The
watchdog needs the GIL for a moment to act; vLLM's busy loop releases it.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

logger = logging.getLogger(__name__)

OWNER_ENV = "LLMD_RAY_ENGINE_OWNER"
POLL_S = 0.2  # only where pidfd_open is unavailable

_hook_registered = False  # inherited by fork children, like the hook itself
_armed_in_pid: int | None = None  # the process whose watchdog is running
_claims = 0  # Engine.start calls inside claim() right now, in this process
_claims_lock = threading.Lock()
_env_before: str | None = None  # OWNER_ENV as it was before the first of them


@dataclass(frozen=True, slots=True)
class Owner:
    """A process identity that survives pid reuse: pid plus start time in clock ticks."""

    pid: int
    start_ticks: int

    def encode(self) -> str:
        return f"{self.pid}:{self.start_ticks}"

    @classmethod
    def decode(cls, value: str | None) -> "Owner | None":
        """Parse ``pid:ticks``; anything malformed is ``None`` (no lifeline)."""
        if not value:
            return None
        pid, sep, ticks = value.partition(":")
        if not sep or not pid.isdigit() or not ticks.isdigit() or int(pid) <= 0:
            return None
        return cls(int(pid), int(ticks))


@dataclass(frozen=True, slots=True)
class ProcStat:
    """The two fields of ``/proc/<pid>/stat`` the lifeline needs."""

    state: str
    start_ticks: int

    @property
    def exited(self) -> bool:
        return self.state in ("Z", "X", "x")  # zombie or dead: gone, just not yet reaped


def parse_stat(text: str) -> ProcStat | None:
    """Parse ``/proc/<pid>/stat``; ``comm`` (field 2) may hold spaces and parentheses."""
    _, paren, rest = text.rpartition(")")
    fields = rest.split()
    if not paren or len(fields) < 20 or not fields[19].isdigit():
        return None
    return ProcStat(state=fields[0], start_ticks=int(fields[19]))  # fields 3 and 22


def read_stat(pid: int) -> ProcStat | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return parse_stat(f.read())
    except OSError:
        return None


def identity(pid: int) -> Owner | None:
    stat = read_stat(pid)
    return Owner(pid, stat.start_ticks) if stat is not None else None


def is_alive(owner: Owner) -> bool:
    stat = read_stat(owner.pid)
    return stat is not None and not stat.exited and stat.start_ticks == owner.start_ticks


def owner_to_watch(environ: Mapping[str, str], my_pid: int) -> Owner | None:
    """The owner this process must die with, or ``None`` (no lifeline, or we are the owner)."""
    owner = Owner.decode(environ.get(OWNER_ENV))
    if owner is None or owner.pid == my_pid:
        return None
    return owner


# ----------------------------------------------------------------- owner side
@contextmanager
def claim() -> Iterator[Owner | None]:
    """Every process started inside this block (and its descendants) dies with this one.

    Reentrant and thread-safe: engines started concurrently share the claim, and the
    variable's previous value comes back when the last of them leaves.
    """
    global _claims, _env_before
    me = identity(os.getpid())
    if me is None:  # no /proc (not Linux): nothing to watch with
        logger.warning("engine lifeline unavailable: cannot read /proc/%d/stat", os.getpid())
        yield None
        return
    _register_fork_hook()
    with _claims_lock:
        if _claims == 0:
            _env_before = os.environ.get(OWNER_ENV)
        _claims += 1
        os.environ[OWNER_ENV] = me.encode()
    try:
        yield me
    finally:
        with _claims_lock:
            _claims -= 1
            if _claims == 0:
                if _env_before is None:
                    os.environ.pop(OWNER_ENV, None)
                else:
                    os.environ[OWNER_ENV] = _env_before


# ----------------------------------------------------------------- child side
def arm() -> None:
    """In an engine process: die as soon as the owner named in the environment is gone."""
    global _armed_in_pid
    pid = os.getpid()
    owner = owner_to_watch(os.environ, pid)
    if owner is None or _armed_in_pid == pid:
        return
    _armed_in_pid = pid
    _register_fork_hook()  # workers this process forks arm as well
    threading.Thread(target=_watchdog, args=(owner, _die), name="llmd-lifeline", daemon=True).start()


def vllm_plugin() -> None:
    """``vllm.general_plugins`` entry point: vLLM calls it once in each of its processes."""
    arm()


def wait_for_exit(owner: Owner, poll_s: float = POLL_S) -> None:
    """Block until ``owner`` has exited (returns at once if it already has)."""
    fd = _pidfd(owner.pid)
    if fd is None:
        while is_alive(owner):
            time.sleep(poll_s)
        return
    try:
        if not is_alive(owner):  # died, or the pid is someone else's, before the fd was opened
            return
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        while not poller.poll():  # poll() without timeout only returns with an event
            pass
    finally:
        os.close(fd)


def _pidfd(pid: int) -> int | None:
    """A pidfd for ``pid``, or ``None`` to poll ``/proc`` instead (a vanished pid then polls once)."""
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is None:
        return None
    try:
        return pidfd_open(pid)
    except OSError:  # ESRCH (already gone: the poll loop returns at once) or no kernel support
        return None


def _watchdog(owner: Owner, on_exit: Callable[[Owner], None]) -> None:
    try:
        wait_for_exit(owner)
    except Exception:  # never leave an engine unwatched silently
        logger.exception("engine lifeline watch failed; polling instead")
        while is_alive(owner):
            time.sleep(POLL_S)
    on_exit(owner)


def _die(owner: Owner) -> None:
    msg = f"[llmd-lifeline] owner process {owner.pid} is gone; killing engine process {os.getpid()}\n"
    try:
        os.write(2, msg.encode())
    finally:
        os.kill(os.getpid(), signal.SIGKILL)


def _register_fork_hook() -> None:
    global _hook_registered
    if not _hook_registered and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=arm)
        _hook_registered = True
