"""Running a function on two CPU processes joined by gloo, with a hard timeout.

``run_ranks(target, world, timeout, **kwargs)`` starts a fresh interpreter (``python -m
tests.distributed.harness``) that spawns ``world`` processes; each joins a gloo process group on
a free local port (``init_process_group(timeout=...)``, so a collective that one rank never
joins raises instead of waiting for ever) and calls ``target(rank, world, **kwargs)``, whose
return value (anything ``torch.save`` takes) comes back per rank. The whole run is one
``subprocess.run(timeout=...)``: a deadlock kills the process tree and FAILS the test rather
than hanging CI. The interpreter in between only starts the ranks and waits: it never imports
torch (a second or two of a loaded CPU before the ranks can start).

diffusers 0.42.1's ``enable_parallelism`` places each rank on
``rank % torch.accelerator.device_count()``, which is a division by zero on a machine without an
accelerator; ``patch_device_count`` sets it to 1 in the rank processes only (never in the
library).
"""

from __future__ import annotations

import datetime
import importlib
import importlib.util
import os
import pickle
import signal
import socket
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(target, world: int = 2, timeout: float = 120.0, **kwargs) -> list:
    """``target(rank, world, **kwargs)`` on ``world`` gloo processes; the results by rank."""
    with tempfile.TemporaryDirectory() as folder:
        job = os.path.join(folder, "job.pkl")
        with open(job, "wb") as f:
            module = target.__module__
            if module == "__main__":  # a script: the ranks load its file under another name
                module = os.path.abspath(sys.modules["__main__"].__file__)
            pickle.dump((module, target.__name__, world, kwargs, folder), f)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [ROOT, *filter(None, [os.environ.get("PYTHONPATH")])]))
        # A session of its own, so that a timeout kills the ranks too, not only their parent.
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.distributed.harness", job], cwd=ROOT, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        )
        try:
            _, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            _, stderr = process.communicate()
            raise AssertionError(
                f"{target.__name__} on {world} processes did not finish in {timeout:.0f} s "
                f"(a rank waiting on a collective the other never joined?):\n{stderr[-3000:]}"
            ) from None
        if process.returncode != 0:
            raise AssertionError(f"{target.__name__} failed on {world} processes:\n"
                                 f"{stderr[-6000:]}")
        import torch

        return [torch.load(os.path.join(folder, f"rank{r}.pt"), weights_only=False)
                for r in range(world)]


def patch_device_count() -> None:
    """diffusers 0.42.1 divides by ``torch.accelerator.device_count()`` (0 on a CPU)."""
    import torch

    if torch.accelerator.device_count() == 0:
        torch.accelerator.device_count = lambda: 1


def _rank_main(rank: int, module: str, name: str, world: int, kwargs: dict, folder: str,
               port: int) -> None:
    import torch
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    try:
        patch_device_count()
        target = getattr(_load(module), name)
        torch.save(target(rank, world, **kwargs), os.path.join(folder, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _load(module: str):
    """A module by name, or a script by its path (as ``ranked_script``, so that its
    ``if __name__ == "__main__"`` block does not run again)."""
    if not module.endswith(".py"):
        return importlib.import_module(module)
    spec = importlib.util.spec_from_file_location("ranked_script", module)
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded


def _main(job: str) -> None:
    """Start the ranks, wait for them; the first that fails ends the others and the run."""
    import multiprocessing
    import time

    with open(job, "rb") as f:
        module, name, world, kwargs, folder = pickle.load(f)
    spawn = multiprocessing.get_context("spawn")
    port = free_port()
    ranks = [spawn.Process(target=_rank_main, args=(r, module, name, world, kwargs, folder, port))
             for r in range(world)]
    for process in ranks:
        process.start()
    while any(p.exitcode is None for p in ranks):
        failed = [r for r, p in enumerate(ranks) if p.exitcode not in (None, 0)]
        if failed:
            for process in ranks:
                process.kill()
            sys.exit(f"rank {failed[0]} exited with code {ranks[failed[0]].exitcode}")
        time.sleep(0.05)
    failed = [r for r, p in enumerate(ranks) if p.exitcode != 0]
    if failed:
        sys.exit(f"rank {failed[0]} exited with code {ranks[failed[0]].exitcode}")


if __name__ == "__main__":
    _main(sys.argv[1])
