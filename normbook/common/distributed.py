"""A torch.distributed process group on this machine (gloo, loopback), and
running a function on each rank.

Chapter 11 and its tests start their processes here.  The processes are
spawned (not forked: a forked Jupyter kernel can hang its children), so the
function they run must be importable: defined in a module such as
`normbook.ch11_batchnorm_across_processes`, not in a notebook.  Every wait
is bounded: the group's collectives time out after `timeout` seconds, and so
does the wait for each rank's result, so a hang ends in a clear error, not a
stuck run.
"""
import datetime
import multiprocessing
import pickle
import queue
import socket
import time

import torch
import torch.distributed as dist


def free_port():
    """A TCP port on the loopback interface that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _picklable(error):
    """The error itself if it survives the trip to the parent, else a
    RuntimeError with its text."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")


def _serve(rank, world_size, port, timeout, tasks, results):
    """A rank's loop: join the group, then run fn(rank, world_size, *args)
    for each task until None."""
    torch.set_num_threads(1)
    try:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}",
                                rank=rank, world_size=world_size,
                                timeout=datetime.timedelta(seconds=timeout))
    except Exception as error:
        # e.g. another rank never came: report it, don't hang
        results.put((rank, False, RuntimeError(
            f"rank {rank} could not join the group: {error}")))
        return
    results.put((rank, True, "joined"))
    try:
        for fn, args in iter(tasks.get, None):
            try:
                results.put((rank, True, fn(rank, world_size, *args)))
            except Exception as error:
                results.put((rank, False, _picklable(error)))
    finally:
        dist.destroy_process_group()


class LocalGroup:
    """world_size processes on this machine that form one gloo group; `run`
    calls a function on all of them.

    Starting processes costs seconds (each imports torch), so one group can
    serve many calls:
    `with LocalGroup(3) as group: group.run(fn, ...); group.run(...)`.
    """

    def __init__(self, world_size, timeout=60, start_timeout=120):
        if world_size < 1:
            raise ValueError("world_size must be >= 1, "
                             f"got world_size={world_size}")
        self.world_size, self.timeout = world_size, timeout
        context = multiprocessing.get_context("spawn")
        self._results = context.Queue()
        self._tasks = [context.Queue() for _ in range(world_size)]
        port = free_port()
        self._processes = [
            context.Process(target=_serve, daemon=True,
                            args=(rank, world_size, port, timeout,
                                  self._tasks[rank], self._results))
            for rank in range(world_size)]
        for process in self._processes:
            process.start()
        # starting a process imports torch: slow
        self._collect("joining the group", start_timeout)

    def _collect(self, what, timeout):
        """Each rank's answer, in rank order; the first error raised by any
        rank is raised here.

        A rank that gives no answer in time shuts the group down (it may be
        stuck in a collective); errors that every rank reports leave the
        group usable.
        """
        answers, deadline = {}, time.monotonic() + timeout
        while len(answers) < self.world_size:
            left = deadline - time.monotonic()
            if any(error for ok, error in answers.values() if not ok):
                # a rank failed: the others may be stuck in a collective
                left = min(left, 5.0)
            try:
                rank, ok, value = self._results.get(timeout=max(left, 0.01))
            except queue.Empty:
                break
            answers[rank] = (ok, value)
        failed = [(rank, value)
                  for rank, (ok, value) in sorted(answers.items()) if not ok]
        missing = [rank for rank in range(self.world_size)
                   if rank not in answers]
        if missing:
            self.close(stuck=missing)
        if failed:
            raise failed[0][1]
        if missing:
            raise TimeoutError(f"rank(s) {missing} of {self.world_size} "
                               f"gave no answer within {timeout} s while "
                               f"{what}; the group was shut down")
        return [answers[rank][1] for rank in range(self.world_size)]

    def run(self, fn, *args):
        """[fn(rank, world_size, *args) on each rank], in rank order; fn and
        args must be picklable."""
        if self._processes is None:
            raise RuntimeError("the group is closed")
        for tasks in self._tasks:
            tasks.put((fn, args))
        return self._collect(f"running {getattr(fn, '__name__', fn)}",
                             self.timeout)

    def close(self, stuck=()):
        """Stop the ranks: end the `stuck` ones, ask the others to leave, end
        whichever has not in 5 s."""
        if self._processes is None:
            return
        for rank in stuck:
            self._processes[rank].kill()
        for tasks in self._tasks:
            tasks.put(None)
        for process in self._processes:
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
                process.join(timeout=5)
        self._processes = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def run_on_group(fn, world_size, *args, timeout=60, start_timeout=120):
    """Start a group of world_size processes, return
    [fn(rank, world_size, *args) for each rank], stop it."""
    with LocalGroup(world_size, timeout, start_timeout) as group:
        return group.run(fn, *args)
