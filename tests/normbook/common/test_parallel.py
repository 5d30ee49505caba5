"""normbook.common.parallel: runs in workers, which end with their parent."""
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from normbook.common.charlm import lm_run
from normbook.common.parallel import run_all

TINY = dict(steps=4, batch_size=4, lr=1e-3, d_model=8, n_heads=2, n_layers=1)


def test_run_all_in_workers_equals_in_process_and_keeps_order():
    configs = [dict(seed=seed, placement=placement, **TINY)
               for seed in (0, 1) for placement in ("pre", "post")]
    here = run_all(lm_run, configs, workers=1)
    there = run_all(lm_run, configs, workers=2)
    assert all(run["settings"].items() >= config.items()
               for run, config in zip(there, configs))
    assert ([run["train_loss"] for run in there]
            == [run["train_loss"] for run in here])
    # seeds differ, so order is tested
    assert here[0]["train_loss"] != here[2]["train_loss"]


def test_run_all_of_nothing():
    assert run_all(lm_run, [], workers=2) == []


PARENT = textwrap.dedent("""
    import os, sys, time
    from normbook.common.parallel import run_all

    def record_and_wait(folder, index):
        with open(os.path.join(folder, f"{index}.pid"), "w") as f:
            f.write(str(os.getpid()))
        time.sleep(600)        # a long run, cut short by the parent's death

    if __name__ == "__main__":
        run_all(record_and_wait, [dict(folder=sys.argv[1], index=i)
                                  for i in range(2)], workers=2)
""")


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:   # a zombie has exited; only its exit status is left to collect
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_workers_exit_when_their_parent_is_killed(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    parent = subprocess.Popen([sys.executable, str(script), str(tmp_path)])
    try:
        deadline = time.monotonic() + 120
        while len(list(tmp_path.glob("*.pid"))) < 2:
            assert parent.poll() is None, (
                "the parent ended before its workers started")
            assert time.monotonic() < deadline, (
                "the workers did not start in 120 s")
            time.sleep(0.1)
        workers = [int(p.read_text()) for p in tmp_path.glob("*.pid")]
        assert all(alive(pid) for pid in workers)
        # no chance to shut the pool down
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 5
        while (any(alive(pid) for pid in workers)
               and time.monotonic() < deadline):
            time.sleep(0.1)
        survivors = [pid for pid in workers if alive(pid)]
        assert not survivors, (
            f"workers {survivors} outlived their parent by 5 s")
    finally:
        parent.kill()
        for p in tmp_path.glob("*.pid"):
            try:
                os.kill(int(p.read_text()), signal.SIGKILL)
            except ProcessLookupError:
                pass
