"""Threads, processes and thread counts: the GIL is released around forward passes,
concurrent calls on one model give the serial results, forked and spawned
children run their own forward passes, and results do not depend on timing."""
from __future__ import annotations

import os
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import alexnet_c as ac
from _subproc import run_neutral  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(ac.__file__)))


def _env(**extra):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([REPO] + [p for p in [env.get("PYTHONPATH")] if p])
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def model():
    return ac.AlexNet(num_classes=10, seed=11)


@pytest.fixture
def threads():
    """Restores the thread count a test changes."""
    prev = ac.get_num_threads()
    yield
    ac.set_num_threads(prev)


def _images(seed, n=2, size=127):
    return np.random.default_rng(seed).standard_normal((n, 3, size, size)).astype(np.float32)


class Ticker(threading.Thread):
    """A pure-Python thread that notes the time about every millisecond it gets to run."""

    def __init__(self):
        super().__init__(daemon=True)
        self.stamps = []
        self.stop = threading.Event()

    def run(self):
        last = 0.0
        while not self.stop.is_set():
            t = time.perf_counter()
            if t - last > 0.001:
                self.stamps.append(t)
                last = t

    def ran_inside(self, t0, t1):
        """True when the thread ran in the middle half of [t0, t1]: a thread that held
        the GIL for the whole interval would leave no stamp there (switch requests are
        only honoured between bytecodes, so at most right after t0 or before t1)."""
        d = t1 - t0
        return any(t0 + 0.25 * d < s < t1 - 0.25 * d for s in self.stamps)


def test_two_threads_match_serial_and_release_the_gil(model):
    xs = [_images(1), _images(2)]
    serial = [model(x) for x in xs]
    rounds = 3
    results = [[None] * rounds for _ in xs]
    windows = [[] for _ in xs]   # (start, end) of every forward call
    start = threading.Barrier(len(xs))

    def work(i):
        start.wait()
        for r in range(rounds):
            t0 = time.perf_counter()
            results[i][r] = model(xs[i])
            windows[i].append((t0, time.perf_counter()))

    ticker = Ticker()
    ticker.start()
    workers = [threading.Thread(target=work, args=(i,)) for i in range(len(xs))]
    for t in workers:
        t.start()
    for t in workers:
        t.join(120)
    ticker.stop.set()
    ticker.join(10)
    assert not any(t.is_alive() for t in workers + [ticker])
    for i in range(len(xs)):
        for r in range(rounds):
            np.testing.assert_array_equal(results[i][r], serial[i])
    # the two workers overlapped in time (both were inside forward() at once) ...
    assert any(a0 < b1 and b0 < a1 for a0, a1 in windows[0] for b0, b1 in windows[1])
    # ... and the third thread kept running while they computed
    inside = [ticker.ran_inside(t0, t1) for w in windows for t0, t1 in w]
    assert sum(inside) >= len(inside) // 2, (inside, windows)


def test_gil_released_single_call(model):
    """One long forward pass; a Python thread keeps running in the middle of it."""
    x = _images(3, n=2, size=224)
    ticker = Ticker()
    ticker.start()
    time.sleep(0.01)
    t0 = time.perf_counter()
    model(x)
    t1 = time.perf_counter()
    ticker.stop.set()
    ticker.join(10)
    assert ticker.ran_inside(t0, t1), (t1 - t0, len(ticker.stamps))


def test_repeated_calls_bit_identical(model, threads):
    x = _images(4, n=3, size=90)
    for n in (1, 2):
        ac.set_num_threads(n)
        first = model(x)
        for _ in range(3):
            np.testing.assert_array_equal(model(x), first)


def test_one_and_two_threads_agree(model, threads):
    x = _images(5, n=9, size=80)   # n > 8: the packed-GEMM path of the classifier too
    ac.set_num_threads(1)
    one = model(x)
    ops1 = (ac.conv2d(x, np.ones((4, 3, 3, 3), np.float32)), ac.linear(x.reshape(9, -1)[:, :300],
                                                                         np.ones((5, 300), np.float32)))
    ac.set_num_threads(2)
    assert ac.get_num_threads() == 2
    two = model(x)
    ops2 = (ac.conv2d(x, np.ones((4, 3, 3, 3), np.float32)), ac.linear(x.reshape(9, -1)[:, :300],
                                                                         np.ones((5, 300), np.float32)))
    scale = np.abs(one).max()
    assert np.abs(one - two).max() <= 1e-4 * scale
    for a, b in zip(ops1, ops2):
        assert np.abs(a - b).max() <= 1e-4 * np.abs(a).max()


_CHILD_SCRIPT = textwrap.dedent("""
    import multiprocessing as mp
    import sys
    import numpy as np
    import alexnet_c as ac

    def child(q):
        m = ac.AlexNet(num_classes=10, seed=5)
        x = np.random.default_rng(0).standard_normal((2, 3, 80, 80)).astype(np.float32)
        q.put((ac.get_num_threads(), m(x)))

    if __name__ == "__main__":
        method = sys.argv[1]
        ac.set_num_threads(2)
        m = ac.AlexNet(num_classes=10, seed=5)
        x = np.random.default_rng(0).standard_normal((2, 3, 80, 80)).astype(np.float32)
        parent = m(x)          # the OpenMP worker pool exists now
        ctx = mp.get_context(method)
        q = ctx.Queue()
        p = ctx.Process(target=child, args=(q,))
        p.start()
        try:
            threads, out = q.get(timeout=30)
        except Exception as exc:
            p.kill()
            print(f"HANG: the {method} child gave no result within 30 s ({type(exc).__name__})")
            sys.exit(3)
        p.join(30)
        if p.is_alive():
            p.kill()
            print(f"HANG: the {method} child did not exit within 30 s")
            sys.exit(3)
        assert p.exitcode == 0, p.exitcode
        assert np.abs(out - parent).max() <= 1e-4 * np.abs(parent).max()
        # the parent still works, with its threads, after the child
        np.testing.assert_array_equal(m(x), parent)
        print("ok", method, "child threads", threads)
""")


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_child_process_forward(tmp_path, method):
    script = tmp_path / "child.py"
    script.write_text(_CHILD_SCRIPT)
    r = run_neutral([sys.executable, str(script), method], capture_output=True, text=True, timeout=120,
                       env=_env())
    assert r.returncode == 0 and r.stdout.startswith("ok"), r.stdout + r.stderr
    if method == "fork":   # threads.c's atfork handler makes the child single-threaded
        assert r.stdout.strip().endswith("child threads 1"), r.stdout


def test_fork_in_process(model):
    """The same in the test process itself (with torch and everything else loaded)."""
    import multiprocessing as mp
    x = _images(6, n=1, size=63)
    parent = model(x)
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=lambda: q.put(model(x)))
    p.start()
    try:
        out = q.get(timeout=30)
    finally:
        p.join(30)
        if p.is_alive():
            p.kill()
    assert p.exitcode == 0
    # the child runs single-threaded (threads.c's atfork handler): the parity rule, not bits
    assert np.abs(out - parent).max() <= 1e-4 * np.abs(parent).max()


_FORKED_PROBES_SCRIPT = textwrap.dedent("""
    import os, signal, numpy as np, alexnet_c as ac
    ac.set_num_threads(2)
    ac.conv2d(np.ones((1, 8, 32, 32), np.float32), np.ones((8, 8, 3, 3), np.float32))  # OpenMP pool started
    pid = os.fork()
    if pid == 0:
        signal.alarm(20)   # a hang is a failure, not a stuck suite
        ok = ac._C.measure_fma_peak(2, 0.02) > 0 and ac._C.measure_read_bw(np.ones(1 << 16, np.float32), 2, 2) > 0
        os._exit(0 if ok else 3)
    _, status = os.waitpid(pid, 0)
    print("child", os.waitstatus_to_exitcode(status))
""")


def test_machine_probes_in_a_forked_child():
    """measure_fma_peak / measure_read_bw take their thread count from the caller; in a
    forked child (no OpenMP pool) they ran into a hang."""
    r = run_neutral([sys.executable, "-c", _FORKED_PROBES_SCRIPT], capture_output=True, text=True, timeout=120,
                    env=_env())
    assert r.returncode == 0 and r.stdout.strip() == "child 0", r.stdout + r.stderr


_THREADS_SCRIPT = "import alexnet_c as ac; print(ac.get_num_threads())"


@pytest.mark.parametrize("value", ["1", "2", "3", "7"])
def test_omp_num_threads_honoured(value):
    r = run_neutral([sys.executable, "-c", _THREADS_SCRIPT], capture_output=True, text=True, timeout=60,
                       env=_env(OMP_NUM_THREADS=value))
    assert r.returncode == 0 and r.stdout.strip() == value, r.stdout + r.stderr


def test_default_threads_and_set_override():
    env = _env()
    env.pop("OMP_NUM_THREADS", None)
    script = ("import os, alexnet_c as ac; d = ac.get_num_threads(); ac.set_num_threads(3); "
              "print(d, ac.get_num_threads(), len(os.sched_getaffinity(0)))")
    r = run_neutral([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    default, after, cores = map(int, r.stdout.split())
    assert default == cores and after == 3
    r = run_neutral([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                       env=_env(OMP_NUM_THREADS="1"))
    default, after, _ = map(int, r.stdout.split())
    assert default == 1 and after == 3   # set_num_threads overrides the environment


def test_set_num_threads_visible_from_other_threads(threads):
    ac.set_num_threads(1)
    seen = []
    t = threading.Thread(target=lambda: seen.append(ac.get_num_threads()))
    t.start()
    t.join()
    assert seen == [1]
    for bad in (0, -1, 5000):
        with pytest.raises(ValueError):
            ac.set_num_threads(bad)
    assert ac.get_num_threads() == 1
