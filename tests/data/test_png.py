"""The fast PNG decode gives cv2's and PIL's pixels, bit for bit, and refuses what libpng refuses.

    from bisenet_pl.data.png import decode_plain_png
    decode_plain_png(open(path, "rb").read(), "rgb")   # (H, W, 3) uint8, or None: decode it with cv2

Wuffs skips PNG's checksums for speed; the chunk walk in front of it checks them, so a damaged frame is
still named (the fallback decoders then say what is wrong), never trained on.
"""

from __future__ import annotations

import threading
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from bisenet_pl.data import png
from bisenet_pl.data.cityscapes import Sample, find_samples, load_image, load_label
from bisenet_pl.data.synthetic import make_synthetic_cityscapes
from bisenet_pl.errors import DatasetError


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_synthetic_cityscapes(
        tmp_path_factory.mktemp("png") / "cs", n_train=3, n_val=0, n_test=0, height=256, width=512, seed=3
    )


def test_make_install_brings_wuffs():
    assert png.DECODER == "wuffs", "pywuffs (the `fastpng` extra) is installed by `make install`"


def test_fast_decode_gives_cv2_and_pil_pixels(root):
    for sample in find_samples(root, "train"):
        data = sample.image.read_bytes()
        bgr = cv2.imread(str(sample.image), cv2.IMREAD_COLOR)
        for layout, want in (("bgr", bgr), ("rgb", bgr[..., ::-1])):
            got = png.decode_plain_png(data, layout)
            assert got is not None and got.dtype == np.uint8 and got.flags.c_contiguous  # the fast path
            assert np.array_equal(got, want)
            assert np.array_equal(load_image(sample.image, layout), want)
        grey = png.decode_plain_png(sample.label.read_bytes(), "grey")
        assert grey is not None and grey.ndim == 2 and grey.flags.c_contiguous
        assert np.array_equal(grey, np.array(Image.open(sample.label)))
        assert np.array_equal(load_label(sample), load_label_with_pil(sample))


def load_label_with_pil(sample: Sample) -> np.ndarray:
    from bisenet_pl.data.cityscapes import LABEL_ID_TO_TRAIN_ID

    label = np.array(Image.open(sample.label))
    return LABEL_ID_TO_TRAIN_ID[label] if sample.label_kind == "labelIds" else label


def test_libspng_fallback_gives_the_same_pixels(root, monkeypatch):
    sample = find_samples(root, "train")[0]
    fast = {layout: png.decode_plain_png(sample.image.read_bytes(), layout) for layout in ("rgb", "bgr")}
    fast["grey"] = png.decode_plain_png(sample.label.read_bytes(), "grey")
    monkeypatch.setattr(png, "_wuffs", None)
    monkeypatch.setattr(png, "DECODER", "libspng")
    for layout, want in fast.items():
        data = (sample.label if layout == "grey" else sample.image).read_bytes()
        got = png.decode_plain_png(data, layout)
        assert got is not None and np.array_equal(got, want)


@pytest.mark.parametrize("kind", ["palette", "rgba", "grey16", "rgb16", "gamma", "grey-as-rgb"])
def test_other_png_kinds_go_to_the_reference_decoders(tmp_path, kind):
    rng = np.random.default_rng(0)
    path = tmp_path / "x.png"
    rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    if kind == "palette":
        Image.fromarray(rgb).convert("P").save(path)
    elif kind == "rgba":
        Image.fromarray(np.dstack([rgb, np.full((20, 30), 7, np.uint8)])).save(path)
    elif kind == "grey16":
        cv2.imwrite(str(path), rng.integers(0, 65535, (20, 30), dtype=np.uint16))
    elif kind == "rgb16":
        cv2.imwrite(str(path), rng.integers(0, 65535, (20, 30, 3), dtype=np.uint16))
    elif kind == "gamma":  # a gAMA chunk: decoders may act on it, so the reference one decides
        Image.fromarray(rgb).save(path)
        data = path.read_bytes()  # signature and IHDR are the first 33 bytes; gAMA goes right after
        body = b"gAMA" + (45455).to_bytes(4, "big")
        chunk = (4).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")
        path.write_bytes(data[:33] + chunk + data[33:])
    else:  # a grey file asked for as RGB: not the kind the fast path was asked for
        Image.fromarray(rgb[..., 0]).save(path)
    layout = "grey" if kind == "grey16" else "rgb"
    assert png.decode_plain_png(path.read_bytes(), layout) is None
    assert np.array_equal(load_image(path), cv2.imread(str(path), cv2.IMREAD_COLOR))


def _uncompressed_png(path, pixels: np.ndarray) -> bytes:
    """A PNG whose IDAT holds stored (uncompressed) deflate blocks: a flipped pixel byte still inflates."""
    Image.fromarray(pixels).save(path, compress_level=0)
    return path.read_bytes()


def test_a_flipped_bit_is_refused_and_named(tmp_path):
    pixels = np.random.default_rng(1).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    path = tmp_path / "aachen_000000_000019_leftImg8bit.png"
    data = bytearray(_uncompressed_png(path, pixels))
    at = data.index(b"IDAT") + 4 + 200  # a pixel byte inside the stored block
    data[at] ^= 0x10
    path.write_bytes(bytes(data))
    # Without the CRC walk Wuffs would hand back different pixels without a word:
    raw = png._decoders.get("rgb").decode(bytes(data))
    assert not raw.error_message and not np.array_equal(raw.pixbuf, pixels)
    assert png.decode_plain_png(bytes(data), "rgb") is None
    with pytest.raises(DatasetError, match="aachen_000000_000019_leftImg8bit.png"):
        load_image(path)


def test_a_truncated_file_is_refused_and_named(tmp_path, root):
    source = find_samples(root, "train")[0]
    path = tmp_path / "bochum_000000_000019_leftImg8bit.png"
    path.write_bytes(source.image.read_bytes()[:-5000])
    assert png.decode_plain_png(path.read_bytes(), "rgb") is None
    with pytest.raises(DatasetError, match="bochum_000000_000019_leftImg8bit.png"):
        load_image(path)
    label = tmp_path / "bochum_000000_000019_gtFine_labelIds.png"
    label.write_bytes(source.label.read_bytes()[:-40])
    with pytest.raises(DatasetError, match="bochum_000000_000019_gtFine_labelIds.png"):
        load_label(Sample(path, label, "labelIds"))


def test_threads_decode_side_by_side(root):
    datas = [s.image.read_bytes() for s in find_samples(root, "train")]
    want = [png.decode_plain_png(d, "bgr") for d in datas]
    errors: list[str] = []

    def work() -> None:
        for _ in range(5):
            for d, w in zip(datas, want, strict=True):
                if not np.array_equal(png.decode_plain_png(d, "bgr"), w):
                    errors.append("pixels differ")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
