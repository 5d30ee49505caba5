"""Independent training runs in worker processes: a reader with more cores
gets the same results sooner.

Each run seeds itself and uses one torch thread, so its result does not depend
on which worker ran it, on how many workers there were, or on the order: the
pool only changes the wall time.
"""
import multiprocessing
import multiprocessing.connection
import os
import threading
from concurrent.futures import ProcessPoolExecutor

import torch


def _exit_with_parent():
    """End this worker as soon as the process that started it is gone.

    A killed parent (a timeout, or "restart kernel" in Jupyter) cannot shut
    the pool down, and a worker blocked on its task pipe would wait forever.
    """
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch():
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent",
                     daemon=True).start()


def _worker_init():
    _exit_with_parent()
    torch.set_num_threads(1)


def default_workers():
    """One worker per core this process may use."""
    return (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
            else os.cpu_count())


def run_all(fn, configs, workers=None):
    """[fn(**config) for config in configs], the calls spread over `workers`
    processes.

    fn must be importable (defined in a module, not in a notebook), and its
    arguments and result picklable.  workers=1 runs everything in this process.
    """
    configs = list(configs)
    workers = min(workers or default_workers(), len(configs))
    if workers < 1:
        return []
    if workers == 1:
        return [fn(**config) for config in configs]
    # spawn, not fork: a forked Jupyter kernel (threads, open sockets) can
    # hang its children
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context,
                             initializer=_worker_init) as pool:
        futures = [pool.submit(fn, **config) for config in configs]
        return [future.result() for future in futures]
