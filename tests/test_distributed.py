"""alexnet_c.distributed: scoring an image collection on a Dask LocalCluster.

One cluster (2 worker processes, 1 thread each, 127.0.0.1, no dashboard) serves the
module; a few hundred small generated images (plus corrupt files) are scored and
compared with single-process `model.predict`.
"""
import math
import os
import signal
import textwrap
import time
import types

import numpy as np
import pytest

pytest.importorskip("dask.dataframe")
pytest.importorskip("distributed")
pytest.importorskip("pyarrow")
Image = pytest.importorskip("PIL.Image")
import pandas as pd  # noqa: E402  (after the skips: pandas comes with the extra)

import alexnet_c as ac  # noqa: E402
from _subproc import run_python  # noqa: E402

N_IMAGES = 200
TOPK = 5


def _cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


@pytest.fixture(scope="module")
def acd():
    import alexnet_c.distributed as mod
    return mod


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Images in two folders (JPEG and PNG; RGB, L and RGBA; 40..90 px), two corrupt
    files, and a seeded model saved as .npz."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    good = []
    for i in range(N_IMAGES):
        sub = root / ("a" if i % 2 else "b")
        sub.mkdir(exist_ok=True)
        h, w = (int(v) for v in rng.integers(40, 91, 2))
        # Blocky noise: a few colour regions, so images differ in more than pixel noise.
        small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        pixels = np.asarray(Image.fromarray(small).resize((w, h), Image.BILINEAR))
        pixels = np.clip(pixels + rng.integers(-20, 21, pixels.shape), 0, 255).astype(np.uint8)
        img = Image.fromarray(pixels)
        if i % 10 == 3:
            img = img.convert("L")
        if i % 10 == 7:
            img = img.convert("RGBA")
            path = sub / f"img{i:03d}.png"
        else:
            path = sub / f"img{i:03d}.{'jpg' if i % 3 else 'png'}"
        img.save(path)
        good.append(str(path))
    bad_bytes = root / "a" / "zz_not_an_image.jpg"
    bad_bytes.write_bytes(b"this is not a JPEG file\n" * 10)
    whole = (root / "b" / "img000.png").read_bytes()
    truncated = root / "b" / "zz_truncated.png"
    truncated.write_bytes(whole[: len(whole) // 2])

    # A seeded model, weights scaled to Kaiming's variance (PyTorch's default init
    # gives near-uniform probabilities, whose top-5 order would be down to rounding).
    base = ac.AlexNet(num_classes=1000, seed=0).state_dict()
    scale = np.float32(math.sqrt(6.0))
    model = ac.AlexNet.from_state_dict(
        {k: v * scale if k.endswith("weight") else v for k, v in base.items()})
    del base
    weights = tmp_path_factory.mktemp("weights") / "alexnet_seed0.npz"
    model.save(weights)
    return types.SimpleNamespace(root=root, good=good, bad=[str(bad_bytes), str(truncated)],
                                 model=model, weights=str(weights))


@pytest.fixture(scope="module")
def reference(data):
    """path -> single-process model.predict result, for every good image."""
    preds = data.model.predict(data.good, topk=TOPK)
    return dict(zip(data.good, preds))


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                           dashboard_address=None)
    client = Client(cluster)
    yield client
    client.close()
    cluster.close()


def _check_against(frame, reference, topk=TOPK):
    """Every row without error has the reference categories and probabilities."""
    for row in frame.itertuples(index=False):
        ref = reference[row.path]
        cats = [getattr(row, f"category_{i}") for i in range(1, topk + 1)]
        probs = [getattr(row, f"prob_{i}") for i in range(1, topk + 1)]
        assert pd.isna(row.error), row
        assert cats == [c for c, _ in ref[:topk]], row.path
        np.testing.assert_allclose(probs, [p for _, p in ref[:topk]], rtol=0, atol=1e-5)


def test_import_is_lazy_and_names_the_extra():
    code = textwrap.dedent("""
        import sys
        import alexnet_c
        assert "dask" not in sys.modules and "distributed" not in sys.modules, "import alexnet_c loaded dask"
        sys.modules["distributed"] = None      # as if the extra were not installed
        try:
            alexnet_c.distributed
        except ImportError as e:
            assert "alexnet_c[distributed]" in str(e), e
        else:
            raise AssertionError("no ImportError")
    """)
    proc = run_python(["-c", code], timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_matches_single_process(acd, client, data, reference):
    frame = acd.predict(os.path.join(data.root, "**", "*.*"), weights=data.weights, client=client,
                        batch_size=32)
    n = N_IMAGES + len(data.bad)
    assert frame.npartitions == math.ceil(n / 32)
    assert list(frame.columns) == acd.result_columns(TOPK)
    result = frame.compute()
    # Each input once, in the glob's (sorted) order, indexed by position.
    assert list(result.path) == sorted(data.good + data.bad)
    assert list(result.index) == list(range(n))
    errors = result[result.error.notna()]
    assert sorted(errors.path) == sorted(data.bad)
    assert errors[[f"category_{i}" for i in range(1, TOPK + 1)]].isna().all().all()
    assert errors[[f"prob_{i}" for i in range(1, TOPK + 1)]].isna().all().all()
    _check_against(result[result.error.isna()], reference)

    # Each worker loaded the weights once, although it ran many tasks (and a second job),
    # and runs the kernels with its share of the cores.
    acd.predict(data.good[:8], weights=data.weights, client=client, batch_size=4).compute()
    key = acd._weights_spec(data.weights)[0]
    loads = client.run(lambda: __import__("alexnet_c.distributed").distributed.load_counts[key])
    assert list(loads.values()) == [1, 1]
    threads = client.run(ac.get_num_threads)
    assert set(threads.values()) == {max(1, _cores() // 2)}


@pytest.mark.skipif(_cores() < 2, reason="a share of one core cannot shrink: needs 2 cores to tell")
def test_thread_share_follows_workers_joining(acd, data):
    """A worker's share of the cores is counted again as workers join (a restart brings
    them back one by one): counted once, the first worker kept every core."""
    from distributed import Client, LocalCluster
    cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                           dashboard_address=None)
    client = Client(cluster)
    try:
        acd.predict(data.good[:4], weights=data.weights, client=client, batch_size=2).compute()
        assert list(client.run(ac.get_num_threads).values()) == [_cores()]
        cluster.scale(2)
        client.wait_for_workers(2)
        # the next task recounts at once, instead of after SHARE_TTL_S
        client.run(lambda: setattr(__import__("alexnet_c.distributed").distributed, "SHARE_TTL_S", 0.0))
        acd.predict(data.good[:8], weights=data.weights, client=client, batch_size=1).compute()

        def task_threads():   # what a scoring task sets, in a task on that worker
            acd._apply_threads(None)
            return ac.get_num_threads()
        shares = [client.submit(task_threads, workers=[w], allow_other_workers=False, pure=False).result()
                  for w in client.scheduler_info()["workers"]]
        assert shares == [_cores() // 2] * 2
    finally:
        client.close()
        cluster.close()


def test_corrupt_and_missing_images_become_rows(acd, client, data, reference):
    missing = os.path.join(data.root, "no_such_file.jpg")
    # named like a glob, matching nothing: its row stays (it was dropped, shifting the rest)
    bracketed = os.path.join(data.root, "photo[1].jpg")
    paths = [data.good[0], data.bad[0], missing, data.good[1], bracketed, data.bad[1], data.good[2]]
    # client=None: the current (default) client is used.
    result = acd.predict(paths, weights=data.weights, batch_size=2, topk=3).compute()
    assert list(result.path) == paths
    errors = dict(zip(result.path, result.error))
    assert errors[missing].startswith("FileNotFoundError: ")
    assert errors[bracketed].startswith("FileNotFoundError: ")
    assert errors[data.bad[0]].startswith("UnidentifiedImageError: ")
    assert errors[data.bad[1]]              # truncated: Pillow's OSError (or SyntaxError)
    _check_against(result[result.error.isna()], reference, topk=3)


def test_weights_as_model_object(acd, client, data, reference):
    paths = data.good[:24]
    frame = acd.predict(paths, weights=data.model, client=client, batch_size=8)
    # The weights travel in the worker plugin, not in the tasks.
    import cloudpickle
    assert len(cloudpickle.dumps(dict(frame.__dask_graph__()))) < 1_000_000
    result = frame.compute()
    assert list(result.path) == paths
    _check_against(result, reference)


def test_fsspec_url_glob(acd, client, data, reference):
    url = "file://" + os.path.join(str(data.root), "a", "img00*.jpg")
    result = acd.predict(url, weights=data.weights, client=client, batch_size=4).compute()
    assert len(result) > 0 and all(p.startswith("file://") for p in result.path)
    result = result.assign(path=[p[len("file://"):] for p in result.path])
    _check_against(result, reference)


def test_argument_errors(acd, client, data):
    with pytest.raises(ValueError, match="topk"):
        acd.predict(data.good[:1], weights=data.weights, client=client, topk=0)
    with pytest.raises(ValueError, match="topk"):
        acd.predict(data.good[:1], weights=data.model, client=client, topk=1001)
    with pytest.raises(ValueError, match="batch_size"):
        acd.predict(data.good[:1], weights=data.weights, client=client, batch_size=0)
    with pytest.raises(FileNotFoundError, match="weights"):
        acd.predict(data.good[:1], weights=os.path.join(data.root, "missing.npz"), client=client)
    with pytest.raises(TypeError, match="weights"):
        acd.predict(data.good[:1], weights=42, client=client)
    with pytest.raises(FileNotFoundError):
        acd.predict(os.path.join(data.root, "*.nothing"), weights=data.weights, client=client)
    with pytest.raises(ValueError, match="not both"):
        acd.predict(data.good[:1], weights=data.weights, client=client, address="tcp://127.0.0.1:1")
    # A file that is not weights fails at predict(), on the workers, and leaves no plugin behind.
    with pytest.raises(ac.WeightsError):
        acd.predict(data.good[:1], weights=data.bad[0], client=client)
    name = "alexnet_c-" + acd._weights_spec(data.bad[0])[0]
    assert name not in client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.worker_plugins))


def test_worker_killed_mid_job_loses_no_rows(acd, client, data, reference):
    paths = data.good[:64]
    frame = acd.predict(paths, weights=data.weights, client=client, batch_size=4)
    pids = client.run(os.getpid)
    futures = client.compute(frame.to_delayed())
    deadline = time.monotonic() + 120
    while sum(f.done() for f in futures) < 2:
        assert time.monotonic() < deadline, "no partition finished"
        time.sleep(0.02)
    busy = [w for w, keys in client.processing().items() if keys]
    victim = busy[0] if busy else next(iter(pids))
    assert sum(f.done() for f in futures) < len(futures), "the job finished before the kill"
    os.kill(pids[victim], signal.SIGKILL)
    result = pd.concat(client.gather(futures))
    assert sorted(result.path) == sorted(paths)
    assert result.path.is_unique
    _check_against(result, reference)
    # The nanny restarts the worker (the plugin loads the weights into it again).
    client.wait_for_workers(2, timeout=120)
    assert pids[victim] not in client.run(os.getpid).values()


@pytest.mark.parametrize("cluster", ["local", "scheduler"])
def test_cli_out_parquet(client, data, reference, tmp_path, cluster):
    out = tmp_path / "preds.parquet"
    pattern = os.path.join(data.root, "a", "img01*.*")
    cmd = ["-m", "alexnet_c", "predict", pattern, "--weights", data.weights,
           "--out", str(out), "--topk", "3", "--batch-size", "4"]
    if cluster == "scheduler":
        cmd += ["--scheduler", client.scheduler.address]
    # The local cluster has one worker per core: keep it at two on a big machine.
    cpus = sorted(os.sched_getaffinity(0))[:2] if hasattr(os, "sched_setaffinity") else None
    proc = run_python(cmd, timeout=240, preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
    assert proc.returncode == 0, proc.stderr
    assert "wrote" in proc.stderr
    result = pd.read_parquet(out)
    expected = sorted(p for p in data.good if os.path.basename(p).startswith("img01")
                      and os.path.dirname(p).endswith("a"))
    assert list(result.path) == expected
    assert list(result.columns) == ["path", "category_1", "category_2", "category_3",
                                    "prob_1", "prob_2", "prob_3", "error"]
    _check_against(result, reference, topk=3)
