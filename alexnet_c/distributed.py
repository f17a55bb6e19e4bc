"""Score an image collection on a Dask cluster, the model loaded once per worker.

    import alexnet_c
    frame = alexnet_c.distributed.predict("images/**/*.jpg", weights="alexnet.safetensors")
    frame.to_parquet("preds.parquet")          # or frame.compute() for a pandas DataFrame

`predict` returns a lazy dask DataFrame, one row per image in input order: `path`,
`category_1..k`, `prob_1..k` (float64) and `error` (None, or "ExceptionType: message"
for an image that could not be read or decoded; its categories are null and its
probabilities NaN). Only paths travel through the scheduler, in partitions of
`batch_size`; each worker reads and preprocesses its own images and runs them
through the C kernels (GIL released).

The weights travel once per worker: a WorkerPlugin, registered with the cluster under
a name derived from the weights' identity, loads the model when the plugin is added
and again on any worker that joins later (a restarted one included); tasks find it in
a per-process cache. alexnet_c's thread count on a worker is its share of the host's
cores (cores // task slots of all workers on that host) unless threads_per_worker
says otherwise, so that workers do not oversubscribe the machine.

Needs the `distributed` extra: pip install 'alexnet_c[distributed]'.
"""
from __future__ import annotations

try:
    import dask
    import dask.dataframe as dd
    import distributed
    import pandas as pd
    import pyarrow  # noqa: F401  (to_parquet's engine, and dask's string columns)
    from distributed.diagnostics.plugin import WorkerPlugin
except ImportError as _exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(f"alexnet_c.distributed needs dask, distributed, pandas and pyarrow ({_exc}): "
                      "pip install 'alexnet_c[distributed]'") from _exc

import asyncio
import atexit
import collections
import glob as _glob
import os
import threading
import time
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from . import images as _images
from .model import AlexNet

__all__ = ["predict", "AlexNetPlugin", "result_columns"]

_PRETRAINED = {"IMAGENET1K_V1": "IMAGENET1K_V1", "DEFAULT": "IMAGENET1K_V1"}
_MAX_CACHED_MODELS = 2       # per worker process; an evicted model reloads from its plugin

Spec = Tuple[str, Any]       # ("pretrained", name) | ("file", absolute path) | ("state", {name: array})


# ------------------------------------------------------------------ worker side

_models: "collections.OrderedDict[str, AlexNet]" = collections.OrderedDict()
_models_lock = threading.Lock()
# Graphs computed without a cluster (dask's threaded scheduler) run in the process that
# called predict(): they find their weights here.
_local_specs: "collections.OrderedDict[str, Spec]" = collections.OrderedDict()
# (monotonic time, threads): this worker's share of its host, as last counted.
_share: Tuple[float, Optional[int]] = (0.0, None)
# Seconds a count stands: workers join and leave (a restart brings them back one by
# one), so a share counted once would oversubscribe or idle the host for good.
SHARE_TTL_S = 5.0
load_counts: "collections.Counter[str]" = collections.Counter()   # weights key -> loads in this process


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _load(spec: Spec) -> AlexNet:
    import alexnet_c
    kind, value = spec
    if kind == "pretrained":
        return alexnet_c.alexnet(weights=value, progress=False)
    if kind == "file":
        return alexnet_c.load(value)
    # The plugin's arrays become the model's weights: no second copy on the worker.
    return AlexNet._from_arrays(value, "cpu", copy=False)


def _cached_model(key: str, get_spec: Callable[[], Spec]) -> AlexNet:
    with _models_lock:       # concurrent tasks of one worker wait for a single load
        model = _models.get(key)
        if model is None:
            model = _load(get_spec())
            load_counts[key] += 1
            _models[key] = model
            while len(_models) > _MAX_CACHED_MODELS:
                _models.popitem(last=False)
        else:
            _models.move_to_end(key)
        return model


def _spec_from_plugin(key: str, plugin_name: str) -> Callable[[], Spec]:
    def get() -> Spec:
        try:
            worker = distributed.get_worker()
        except ValueError:
            worker = None
        plugin = worker.plugins.get(plugin_name) if worker is not None else None
        if isinstance(plugin, AlexNetPlugin):
            return plugin.spec
        if key in _local_specs:
            return _local_specs[key]
        raise RuntimeError(f"alexnet_c: no weights for this task: worker plugin {plugin_name!r} is not "
                           "registered here (was the DataFrame computed on another cluster than the "
                           "one predict() registered it with?)")
    return get


def _share_of_host(worker: Any, ncores: Optional[Mapping[str, int]]) -> int:
    """Cores of this machine divided among the task slots of every worker on it.
    ncores: the scheduler's {worker address: threads}, or None when it did not answer."""
    from distributed.comm import get_address_host
    host = get_address_host(worker.address)
    slots = sum(int(n or 1) for addr, n in (ncores or {}).items() if get_address_host(addr) == host)
    slots = max(slots, int(worker.state.nthreads))
    return max(1, _cores() // slots)


async def _count_share(worker: Any) -> int:
    try:
        ncores = await worker.scheduler.ncores()
    except Exception:  # noqa: BLE001 - an old or busy scheduler: count this worker only
        ncores = None
    return _share_of_host(worker, ncores)


def _worker_share(worker: Any) -> int:
    """This worker's share of its host, counted again once SHARE_TTL_S has passed (one
    small scheduler call per worker at most that often)."""
    global _share
    counted_at, n = _share
    now = time.monotonic()
    if n is None or now - counted_at > SHARE_TTL_S:
        from distributed.utils import sync
        n = sync(worker.loop, _count_share, worker)
        _share = (now, n)
    return n


def _apply_threads(threads: Optional[int]) -> None:
    import alexnet_c
    n = threads
    if n is None:
        try:
            worker = distributed.get_worker()
        except ValueError:
            return                       # not on a worker: leave the process's setting alone
        n = _worker_share(worker)
    if alexnet_c.get_num_threads() != n:
        alexnet_c.set_num_threads(n)


class AlexNetPlugin(WorkerPlugin):
    """Loads one model into every worker (existing and future) when registered.

    spec: ("pretrained", "IMAGENET1K_V1"), ("file", absolute path) or ("state",
    {name: array}); key identifies the weights (the plugin is registered under
    "alexnet_c-" + key, idempotently, so registering the same weights again is free)."""

    idempotent = True

    def __init__(self, key: str, spec: Spec) -> None:
        self.key = key
        self.spec = spec
        self.name = "alexnet_c-" + key

    async def setup(self, worker: Any) -> None:
        global _share
        _share = (time.monotonic(), await _count_share(worker))
        spec = self.spec
        # Reading 250 MB (or downloading them) must not block the worker's event loop.
        await asyncio.get_running_loop().run_in_executor(None, _cached_model, self.key, lambda: spec)

    def teardown(self, worker: Any) -> None:
        with _models_lock:
            _models.pop(self.key, None)


def _model_info(key: str) -> Optional[Tuple[str, int]]:
    model = _models.get(key)
    return None if model is None else (model.variant, model.num_classes)


# ------------------------------------------------------------------ one partition

def result_columns(topk: int) -> List[str]:
    """Column names of predict()'s DataFrame for a given topk."""
    return (["path"] + [f"category_{i}" for i in range(1, topk + 1)]
            + [f"prob_{i}" for i in range(1, topk + 1)] + ["error"])


def _frame(paths: Sequence[str], preds: Sequence[Optional[List[Tuple[str, float]]]],
           errors: Sequence[Optional[str]], topk: int, start: int) -> pd.DataFrame:
    cols: Dict[str, Any] = {"path": pd.array(list(paths), dtype=object)}
    for i in range(topk):
        cols[f"category_{i + 1}"] = pd.array([p[i][0] if p is not None else None for p in preds], dtype=object)
    for i in range(topk):
        cols[f"prob_{i + 1}"] = np.array([p[i][1] if p is not None else np.nan for p in preds], np.float64)
    cols["error"] = pd.array(list(errors), dtype=object)
    return pd.DataFrame(cols, index=pd.RangeIndex(start, start + len(paths)))


def _is_url(path: str) -> bool:
    return "://" in path


def _read_source(path: str, cwd: str, storage_options: Optional[Mapping[str, Any]]) -> Any:
    if _is_url(path):
        import fsspec
        with fsspec.open(path, "rb", **(storage_options or {})) as f:
            return f.read()
    return os.path.join(cwd, path)       # relative paths are the client's, not the worker's


def _score_partition(chunk: Sequence[str], start: int, *, key: str, plugin: str, topk: int,
                     threads: Optional[int], cwd: str,
                     storage_options: Optional[Mapping[str, Any]]) -> pd.DataFrame:
    model = _cached_model(key, _spec_from_plugin(key, plugin))
    _apply_threads(threads)
    crop = _images._crop_for(model)
    arrays: List[np.ndarray] = []
    ok: List[int] = []
    errors: List[Optional[str]] = [None] * len(chunk)
    for i, path in enumerate(chunk):
        try:
            arrays.append(_images.preprocess(_read_source(path, cwd, storage_options), crop_size=crop))
            ok.append(i)
        except ImportError:
            raise                        # Pillow (or an fsspec backend) missing is not a bad image
        except Exception as e:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError, ...
            errors[i] = f"{type(e).__name__}: {e}"
    preds: List[Optional[List[Tuple[str, float]]]] = [None] * len(chunk)
    if arrays:
        for i, p in zip(ok, _images.predict(model, np.stack(arrays), topk=topk)):
            preds[i] = p
    return _frame(chunk, preds, errors, topk, start)


# ------------------------------------------------------------------ client side

_owned: Dict[str, Any] = {}          # clients (and the local cluster) predict() made: kept until exit
_owned_lock = threading.Lock()


def _close_owned() -> None:
    with _owned_lock:
        # Clients first, then the cluster they talk to.
        items = sorted(_owned.items(), key=lambda item: item[0] == "local-cluster")
        _owned.clear()
    for _, obj in items:
        try:
            obj.close()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


def _usable(client: Any) -> bool:
    return getattr(client, "status", "running") in ("running", "connecting", "newly-created")


def _local_client() -> Any:
    with _owned_lock:
        client = _owned.get("local-client")
        if client is not None and _usable(client):
            return client
        cluster = distributed.LocalCluster(n_workers=_cores(), threads_per_worker=1, processes=True,
                                           host="127.0.0.1", dashboard_address=None)
        client = distributed.Client(cluster)
        if not _owned:
            atexit.register(_close_owned)
        _owned["local-cluster"], _owned["local-client"] = cluster, client
        return client


def _resolve_client(client: Any, address: Optional[str]) -> Any:
    if client is not None and address:
        raise ValueError("pass client= or address=, not both")
    if client is not None:
        return client
    if address:
        with _owned_lock:
            made = _owned.get("address:" + address)
            if made is not None and _usable(made):
                return made
            try:
                made = distributed.Client(address)
            except OSError as e:
                raise ConnectionError(f"cannot reach the Dask scheduler at {address}: {e}") from e
            if not _owned:
                atexit.register(_close_owned)
            _owned["address:" + address] = made
            return made
    try:
        current = distributed.default_client()
        if _usable(current):
            return current
    except ValueError:
        pass
    return _local_client()


def _has_plugin(name: str, dask_scheduler: Any = None) -> bool:
    return name in dask_scheduler.worker_plugins


def _scheduler_has_plugin(client: Any, name: str) -> bool:
    try:
        return bool(client.run_on_scheduler(_has_plugin, name))
    except Exception:  # noqa: BLE001 - run_on_scheduler disabled or unsupported: just register
        return False


def _weights_spec(weights: Any) -> Tuple[str, Spec, Optional[int]]:
    """(key, spec, num_classes if known here) for predict()'s weights argument."""
    if isinstance(weights, AlexNet):
        state = {name: np.asarray(arr) for name, arr in weights.state_dict().items()}
        return "state-" + dask.base.tokenize(weights.variant, state), ("state", state), weights.num_classes
    if isinstance(weights, (str, os.PathLike)):
        text = os.fspath(weights)
        if not isinstance(text, str):
            raise TypeError(f"weights path must be str or PathLike of str, got {type(text).__name__}")
        if text.upper() in _PRETRAINED:
            name = _PRETRAINED[text.upper()]
            return "pretrained-" + name, ("pretrained", name), 1000
        path = os.path.abspath(os.path.expanduser(text))
        if not os.path.isfile(path):
            raise FileNotFoundError(f"weights file not found: {text}")
        st = os.stat(path)
        return "file-" + dask.base.tokenize(path, st.st_size, st.st_mtime_ns), ("file", path), None
    raise TypeError("weights must be a file path, 'IMAGENET1K_V1'/'DEFAULT' or an alexnet_c.AlexNet, "
                    f"got {type(weights).__name__}")


def _expand_url(url: str, storage_options: Optional[Mapping[str, Any]]) -> List[str]:
    import fsspec
    fs, _, paths = fsspec.core.get_fs_token_paths(url, storage_options=dict(storage_options or {}))
    if not _glob.has_magic(url) and len(paths) == 1 and fs.isdir(paths[0]):
        paths = sorted(p for p in fs.find(paths[0])
                       if os.path.splitext(p)[1].lower() in _images.IMAGE_EXTENSIONS)
    return [fs.unstrip_protocol(p) for p in paths]


def _expand(source: Any, storage_options: Optional[Mapping[str, Any]]) -> List[str]:
    """Image paths, in order: a folder (recursive), a glob, a file, a URL (fsspec), or a list
    of any of these. A listed file is kept even if unreadable, and a listed glob that
    matches nothing stands for itself: its row carries the error."""
    if isinstance(source, (str, os.PathLike)):
        sources, single = [source], True
    elif isinstance(source, (bytes, bytearray)) or not isinstance(source, Iterable):
        raise TypeError("expected a folder, glob pattern, file path, URL or a list of them, "
                        f"got {type(source).__name__}")
    else:
        sources, single = list(source), False
    paths: List[str] = []
    for item in sources:
        if not isinstance(item, (str, os.PathLike)):
            raise TypeError(f"expected paths (str or PathLike), got {type(item).__name__}")
        s = os.fspath(item)
        if not isinstance(s, str):
            raise TypeError(f"expected str paths, got {type(s).__name__}")
        if _is_url(s):
            paths += _expand_url(s, storage_options)
        elif single or os.path.isdir(s):
            paths += list(_images._expand(s))
        elif _glob.has_magic(s) and not os.path.exists(s):
            # A listed name that matches nothing keeps its row (with the error), whether it
            # was meant as a glob or is a missing file named like one ("photo[1].jpg").
            paths += list(_images._expand(s)) or [s]
        else:
            paths.append(s)
    if not paths:
        raise FileNotFoundError(f"no images found for {source!r}")
    return paths


def _check_int(name: str, value: Any, allow_none: bool = False) -> Optional[int]:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def predict(paths_or_glob: Union[str, "os.PathLike[str]", Iterable[Any]], weights: Any = "IMAGENET1K_V1", *,
            client: Any = None, address: Optional[str] = None, batch_size: int = 64, topk: int = 5,
            threads_per_worker: Optional[int] = None,
            storage_options: Optional[Mapping[str, Any]] = None) -> "dd.DataFrame":
    """Top-k predictions for many images on a Dask cluster, as a lazy dask DataFrame.

    paths_or_glob: a folder (searched recursively), a glob ("photos/**/*.jpg"), one file,
        an fsspec URL or URL glob ("s3://bucket/photos/*.jpg", needs s3fs on the workers),
        or a list of any of these; expanded here, on the client. Workers must see the same
        paths (a shared filesystem or an object store); relative paths are taken relative
        to the client's working directory.
    weights: a weights file (any format alexnet_c.load reads; the workers read the same
        path), "IMAGENET1K_V1"/"DEFAULT" (each worker loads torchvision's file from its
        $TORCH_HOME, downloading it if missing), or an AlexNet model (its state dict is
        shipped to each worker once, inside the plugin).
    client: a distributed.Client; address: a scheduler address ("tcp://host:8786") to
        connect to instead. With neither, the current client, else a LocalCluster on
        127.0.0.1 (one process per core, one thread each) kept until the program exits.
    batch_size: images per partition (a task, a forward call).
    threads_per_worker: alexnet_c threads per task; default: the host's cores divided by
        the task slots of all workers on that host.
    storage_options: passed to fsspec for URL paths.

    Columns: path, category_1..topk, prob_1..topk (float64), error (None or
    "ExceptionType: message"; a bad image gives a row, not a failed job). The index is
    the image's position in the expanded input. Compute it on the cluster predict()
    registered the weights with: the default client, which predict() makes the one
    it used unless client= was given and is not the default.
    """
    topk = _check_int("topk", topk)
    batch_size = _check_int("batch_size", batch_size)
    threads_per_worker = _check_int("threads_per_worker", threads_per_worker, allow_none=True)
    key, spec, num_classes = _weights_spec(weights)
    if num_classes is not None and topk > num_classes:
        raise ValueError(f"topk must be in [1, {num_classes}] for a {num_classes}-class model, got {topk}")
    paths = _expand(paths_or_glob, storage_options)
    client = _resolve_client(client, address)

    plugin = AlexNetPlugin(key, spec)
    _local_specs[key] = spec
    _local_specs.move_to_end(key)
    while len(_local_specs) > _MAX_CACHED_MODELS:
        _local_specs.popitem(last=False)
    try:
        # Registering is idempotent, but asking first spares sending a model object's
        # weights to the scheduler again.
        if not _scheduler_has_plugin(client, plugin.name):
            client.register_plugin(plugin, name=plugin.name)
    except BaseException:
        # A worker could not load the weights: leave no broken plugin for later workers.
        try:
            client.unregister_worker_plugin(plugin.name)
        except Exception:  # noqa: BLE001
            pass
        raise
    if num_classes is None:
        infos = [v for v in client.run(_model_info, key).values() if v is not None]
        if infos:
            num_classes = infos[0][1]
            if topk > num_classes:
                raise ValueError(f"topk must be in [1, {num_classes}] for a {num_classes}-class model, "
                                 f"got {topk}")

    starts = list(range(0, len(paths), batch_size))
    chunks = [paths[s:s + batch_size] for s in starts]
    meta = _frame([], [], [], topk, 0)
    return dd.from_map(_score_partition, chunks, starts, meta=meta,
                       divisions=tuple(starts) + (len(paths) - 1,), label="alexnet_c-predict",
                       key=key, plugin=plugin.name, topk=topk, threads=threads_per_worker,
                       cwd=os.getcwd(), storage_options=dict(storage_options) if storage_options else None)
