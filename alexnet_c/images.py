"""Image preprocessing and top-k prediction, matching torchvision's ImageNet recipe.

`preprocess` reproduces `AlexNet_Weights.IMAGENET1K_V1.transforms()` applied to a PIL
image: Pillow's BILINEAR resize of the shorter side to 256 (Pillow's resize filters
always antialias), center crop 224, scale to [0, 1], normalize with ImageNet mean/std.
Arrays are turned into PIL images first, so an array and the same picture as a PIL
image give identical results (torchvision itself only takes PIL images or tensors,
and resizes tensors differently).

Pillow is imported on first use; a float batch needs no Pillow.
"""
from __future__ import annotations

import glob as _glob
import itertools
import os
import sys
from typing import Any, Iterable, Iterator, List, Sequence, Tuple, Union

import numpy as np

from .categories import class_names
from .hub import progress_bar

__all__ = ["preprocess", "load_batch", "predict", "iter_predict", "IMAGE_EXTENSIONS",
           "MEAN", "STD"]

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
RESIZE_SIZE = 256
# torchvision's layout takes 224; the original (2012) layout only takes 227x227.
_CROP = {"torchvision": 224, "original": 227}
_PREDICT_CHUNK = 32

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jfif", ".png", ".bmp", ".gif", ".tif",
                              ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".pnm"})

Prediction = List[Tuple[str, float]]


def _pil_image() -> Any:
    try:
        from PIL import Image
    except ImportError as e:
        raise ImportError("reading images needs Pillow: pip install alexnet_c[images]") from e
    return Image


def _is_pil(x: Any) -> bool:
    # Only consult Pillow if something already imported it: a float batch must not
    # require Pillow to be installed.
    mod = sys.modules.get("PIL.Image")
    return mod is not None and isinstance(x, mod.Image)


def _is_path(x: Any) -> bool:
    return isinstance(x, (str, os.PathLike))


def _to_rgb_pil(img: Any) -> Any:
    """A PIL image in mode RGB. Grayscale is replicated; RGBA's alpha is dropped (as
    PIL's convert("RGB") does, like `Image.open(p).convert("RGB")` in torchvision's
    ImageFolder loader)."""
    Image = _pil_image()
    if _is_path(img):
        with Image.open(img) as im:
            return im.convert("RGB")
    if isinstance(img, (bytes, bytearray, memoryview)):
        import io
        with Image.open(io.BytesIO(bytes(img))) as im:
            return im.convert("RGB")
    if isinstance(img, Image.Image):
        return img if img.mode == "RGB" else img.convert("RGB")
    if isinstance(img, np.ndarray):
        return _array_to_pil(Image, img)
    raise TypeError("expected an image path, PIL image, encoded bytes or HxWx3 uint8 array, "
                    f"got {type(img).__name__}")


def _array_to_pil(Image: Any, a: np.ndarray) -> Any:
    if a.dtype != np.uint8:
        raise TypeError(f"image arrays must be uint8 (H, W), (H, W, 1|3|4), got dtype {a.dtype} "
                        "(a preprocessed float image goes to the model or predict directly)")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))):
        raise ValueError(f"image array must have shape (H, W), (H, W, 1), (H, W, 3) or "
                         f"(H, W, 4), got {a.shape}")
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"image array is empty: shape {a.shape}")
    return Image.fromarray(np.ascontiguousarray(a)).convert("RGB")


def _resized_size(h: int, w: int, size: int) -> Tuple[int, int]:
    # torchvision's rule for a single int: shorter side -> size, longer side scaled
    # and truncated (int(), not round()).
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    return (new_long, new_short) if w <= h else (new_short, new_long)


def _crop_offset(n: int, size: int) -> int:
    """Where torchvision's center crop of `size` starts along a side of n >= size: Python's round()."""
    return int(round((n - size) / 2.0))


def _center_crop(a: np.ndarray, size: int) -> np.ndarray:
    """torchvision's center_crop on an (H, W, C) array: zero-pad an image smaller than
    the crop (extra pixel on the bottom/right), offsets by Python's round()."""
    h, w = a.shape[:2]
    if size > h or size > w:
        ph, pw = max(size - h, 0), max(size - w, 0)
        a = np.pad(a, ((ph // 2, (ph + 1) // 2), (pw // 2, (pw + 1) // 2), (0, 0)))
        h, w = a.shape[:2]
    top, left = _crop_offset(h, size), _crop_offset(w, size)
    return a[top:top + size, left:left + size]


# A resize larger than this is done only where the center crop falls. Such an image is
# hundreds of times longer than wide (a 1x600 strip would become 256x153600): a few
# hundred bytes of PNG could otherwise ask for gigabytes.
FULL_RESIZE_MAX_PIXELS = 2**25


def _resize_crop_region(pil: Any, nh: int, nw: int, crop: int) -> Any:
    """The part of pil.resize((nw, nh)) that the center crop keeps, resized alone through
    Pillow's box (its filter still reads the source pixels around the box). The box's
    coordinates are not bit for bit the full resize's, so values may differ by one
    step of 255 from it."""
    def span(n: int) -> Tuple[int, int]:
        return (_crop_offset(n, crop), crop) if n >= crop else (0, n)

    (top, rows), (left, cols) = span(nh), span(nw)
    w, h = pil.size
    box = (left * w / nw, top * h / nh, (left + cols) * w / nw, (top + rows) * h / nh)
    return pil.resize((cols, rows), _pil_image().BILINEAR, box=box)


def preprocess(img: Any, *, resize_size: int = RESIZE_SIZE, crop_size: int = 224) -> np.ndarray:
    """float32 (3, crop_size, crop_size): `AlexNet_Weights.IMAGENET1K_V1.transforms()`.

    img: a path (str or PathLike), encoded image bytes, a PIL image, or a uint8 array
    (H, W), (H, W, 1), (H, W, 3) or (H, W, 4). EXIF orientation is not applied, as in
    torchvision. crop_size=227 gives the original layout's input. An image so thin that
    its resize would pass FULL_RESIZE_MAX_PIXELS is resized only where the crop falls
    (within one step of 255 of torchvision's values, in bounded memory).
    """
    pil = _to_rgb_pil(img)
    w, h = pil.size
    nh, nw = _resized_size(h, w, resize_size)
    if nh * nw > FULL_RESIZE_MAX_PIXELS:
        pil = _resize_crop_region(pil, nh, nw, crop_size)
    elif (nh, nw) != (h, w):
        pil = pil.resize((nw, nh), _pil_image().BILINEAR)
    a = _center_crop(np.asarray(pil, dtype=np.uint8), crop_size)
    # Same float32 operations, in the same order, as torchvision's
    # convert_image_dtype (x / 255) then normalize ((x - mean) / std).
    x = a.astype(np.float32) / np.float32(255.0)
    x = (x - np.asarray(MEAN, np.float32)) / np.asarray(STD, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def load_batch(items: Iterable[Any], *, crop_size: int = 224) -> np.ndarray:
    """float32 (N, 3, crop_size, crop_size) from images accepted by `preprocess`."""
    arrays = [preprocess(it, crop_size=crop_size) for it in items]
    if not arrays:
        return np.zeros((0, 3, crop_size, crop_size), np.float32)
    return np.stack(arrays)


# ---------------------------------------------------------------- prediction

def _crop_for(model: Any) -> int:
    return _CROP.get(getattr(model, "variant", "torchvision"), 224)


def _probabilities(model: Any, out: np.ndarray) -> np.ndarray:
    out = np.asarray(out, dtype=np.float64)
    if getattr(model, "variant", "torchvision") == "original":
        return np.exp(out)      # its forward ends in log_softmax already
    z = out - out.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _check_topk(model: Any, topk: int) -> int:
    n = int(model.num_classes)
    if isinstance(topk, bool) or not isinstance(topk, (int, np.integer)):
        raise TypeError(f"topk must be an int, got {type(topk).__name__}")
    if not 1 <= topk <= n:
        raise ValueError(f"topk must be in [1, {n}] for a {n}-class model, got {topk}")
    return int(topk)


def _top(model: Any, batch: np.ndarray, topk: int) -> List[Prediction]:
    names = class_names(int(model.num_classes))
    results: List[Prediction] = []
    for start in range(0, batch.shape[0], _PREDICT_CHUNK):
        probs = _probabilities(model, model(batch[start:start + _PREDICT_CHUNK]))
        for p in probs:
            # Stable sort: equal probabilities keep class order, as torch.topk tends to.
            order = np.argsort(-p, kind="stable")[:topk]
            results.append([(names[i], float(p[i])) for i in order])
    return results


def _float_batch(x: np.ndarray) -> Tuple[np.ndarray, bool]:
    """(batch, single) for an already preprocessed (3,H,W) or (N,3,H,W) array."""
    if x.ndim == 3 and x.shape[0] == 3:
        return x[None], True
    if x.ndim == 4 and x.shape[1] == 3:
        return x, False
    raise ValueError("a preprocessed input must have shape (3, H, W) or (N, 3, H, W), "
                     f"got {x.shape}; pass uint8 (H, W, 3) arrays for raw images")


def predict(model: Any, x: Any, topk: int = 5) -> Union[Prediction, List[Prediction]]:
    """Top-k (category, probability) pairs, highest first.

    x: one image (path, PIL image, encoded bytes, uint8 (H, W[, C]) array) -> one list;
    a list/tuple of images -> a list of lists; a preprocessed float array (3, H, W)
    -> one list, (N, 3, H, W) -> a list of lists. Categories are the ImageNet names
    for 1000-class models, else "class_<i>".
    """
    topk = _check_topk(model, topk)
    if isinstance(x, np.ndarray) and x.dtype != np.uint8:
        batch, single = _float_batch(x)
    elif isinstance(x, (list, tuple)):
        batch, single = load_batch(x, crop_size=_crop_for(model)), False
    elif _is_path(x) or _is_pil(x) or isinstance(x, (np.ndarray, bytes, bytearray, memoryview)):
        batch, single = preprocess(x, crop_size=_crop_for(model))[None], True
    elif hasattr(x, "__array__"):           # e.g. a torch tensor holding a float batch
        batch, single = _float_batch(np.asarray(x))
    else:
        raise TypeError(f"cannot predict on a {type(x).__name__}")
    results = _top(model, batch, topk) if batch.shape[0] else []
    return results[0] if single else results


def _folder_images(folder: str) -> Iterator[str]:
    """The image files under folder, at any depth, in sorted order, found lazily."""
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for f in sorted(files):
            if os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS:
                yield os.path.join(root, f)


def _glob_files(pattern: str) -> Iterator[str]:
    """What a glob pattern matches, folders left out, found lazily (unsorted)."""
    return (p for p in _glob.iglob(pattern, recursive=True) if not os.path.isdir(p))


def _expand(source: Any) -> Union[List[str], Iterable[Any]]:
    """Paths from a folder (recursive, image extensions only, sorted), a glob pattern
    (sorted), one file, or an iterable of paths (kept lazy)."""
    if not _is_path(source):
        if isinstance(source, (bytes, np.ndarray)) or not hasattr(source, "__iter__"):
            raise TypeError("expected a folder, glob pattern, file path or iterable of paths, "
                            f"got {type(source).__name__}")
        return source
    s = os.fspath(source)
    if os.path.isdir(s):
        return list(_folder_images(s))
    if os.path.exists(s):
        return [s]
    if _glob.has_magic(s):
        return sorted(_glob_files(s))
    raise FileNotFoundError(f"no such file, folder or glob match: {s!r}")


def iter_predict(model: Any, paths: Any, topk: int = 5, batch_size: int = 32,
                 progress: bool = True) -> Iterator[Tuple[Any, Union[Prediction, Exception]]]:
    """Stream predictions over many images, `batch_size` images in memory at a time.

    paths: a folder (searched recursively for image files), a glob pattern
    ("photos/**/*.jpg"), one file, or any iterable of paths.

    Yields (path, result) per image in input order. result is the top-k list of
    (category, probability) or, for an image that cannot be read or decoded, the
    Exception instance raised while reading it (check `isinstance(result, Exception)`);
    one bad file does not stop the stream. Errors of the model itself propagate.
    A tqdm bar goes to stderr when progress is true.
    """
    topk = _check_topk(model, topk)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    items = _expand(paths)
    # Arguments are checked above, at call time; the work starts on the first next().
    return _stream(model, items, topk, batch_size, progress)


def _stream(model: Any, items: Iterable[Any], topk: int, batch_size: int,
            progress: bool) -> Iterator[Tuple[Any, Union[Prediction, Exception]]]:
    total = len(items) if hasattr(items, "__len__") else None
    crop = _crop_for(model)
    bar = progress_bar(total, desc="alexnet_c predict", unit="img", enabled=progress)
    it = iter(items)
    try:
        while True:
            chunk = list(itertools.islice(it, batch_size))
            if not chunk:
                break
            yield from _predict_chunk(model, chunk, topk, crop)
            bar(len(chunk))
    finally:
        bar.close()


def _predict_chunk(model: Any, chunk: Sequence[Any], topk: int,
                   crop: int) -> Iterator[Tuple[Any, Union[Prediction, Exception]]]:
    arrays: List[np.ndarray] = []
    results: List[Union[Prediction, Exception, None]] = []
    for p in chunk:
        try:
            arrays.append(preprocess(p, crop_size=crop))
            results.append(None)
        except ImportError:
            raise               # Pillow missing is not a bad image
        except Exception as e:  # PIL: OSError, SyntaxError, ValueError, DecompressionBombError
            results.append(e)
    preds = iter(_top(model, np.stack(arrays), topk)) if arrays else iter(())
    for p, r in zip(chunk, results):
        yield p, (next(preds) if r is None else r)
