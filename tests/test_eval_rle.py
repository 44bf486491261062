"""The evaluator's vectorised decoder of compressed COCO RLE strings (run-length totals and areas),
checked against pycocotools and a plain-Python decoder of maskApi.c's rleFrString."""
import numpy as np
import pytest
from pycocotools import mask as mask_util

from iai_d2.evaluation import ytvis_eval
from iai_d2.evaluation.ytvis_eval import _rle_sums, _rle_totals


def reference(s):
    """(total, area) of a compressed RLE string as rleFrString reads it, or None if not valid
    (character outside '0'..'o', value cut off or longer than 6 characters, negative count)."""
    counts, p = [], 0
    while p < len(s):
        x = k = 0
        more = True
        while more:
            if p == len(s):
                return None
            c = ord(s[p]) - 48
            if not 0 <= c < 64:
                return None
            x |= (c & 0x1F) << (5 * k)
            more = c & 0x20
            p, k = p + 1, k + 1
            if not more and c & 0x10:
                x -= 1 << (5 * k)
        if k > 6:
            return None
        if len(counts) > 2:
            x += counts[-2]
        if x < 0:
            return None
        counts.append(x)
    return sum(counts), sum(counts[1::2])


def sums(strings):
    raw = [s.encode("latin-1") for s in strings]
    lens = np.array([len(r) for r in raw], dtype=np.int64)
    return _rle_sums(np.frombuffer(b"".join(raw), dtype=np.uint8), lens)


def random_masks(rng, count):
    """Compressed RLEs of random masks: blobs, noise, empty, full, first/last pixel set."""
    rles, shapes = [], []
    for i in range(count):
        h, w = int(rng.integers(1, 60)), int(rng.integers(1, 60))
        kind = i % 5
        if kind == 0:
            mask = rng.random((h, w)) < rng.random()
        elif kind == 1:
            yy, xx = np.mgrid[:h, :w]
            mask = (yy - rng.uniform(0, h)) ** 2 + (xx - rng.uniform(0, w)) ** 2 < rng.uniform(1, 900)
        elif kind == 2:
            mask = np.zeros((h, w), dtype=bool)
        elif kind == 3:
            mask = np.ones((h, w), dtype=bool)
        else:
            mask = np.zeros((h, w), dtype=bool)
            mask[0, 0] = mask[-1, -1] = True
        rles.append(mask_util.encode(np.asfortranarray(mask.astype(np.uint8))))
        shapes.append(h * w)
    return rles, shapes


@pytest.mark.parametrize("chunk", [ytvis_eval._CHUNK_CHARS, 64, 1])
def test_matches_pycocotools_on_random_masks(monkeypatch, chunk):
    monkeypatch.setattr(ytvis_eval, "_CHUNK_CHARS", chunk)
    rng = np.random.default_rng(0)
    rles, pixels = random_masks(rng, 400)
    # large frames: first counts of 4-5 characters
    big = np.zeros((1080, 1920), dtype=np.uint8, order="F")
    big[500:700, 900:1500] = 1
    rles.append(mask_util.encode(big))
    pixels.append(1080 * 1920)
    totals, areas = sums([r["counts"].decode("ascii") for r in rles])
    assert totals.tolist() == pixels
    assert areas.tolist() == [int(a) for a in mask_util.area(rles[:255])] + \
        [int(a) for a in mask_util.area(rles[255:])]


def test_matches_python_decoder_on_random_strings():
    """Random strings of the alphabet (mostly invalid) and of valid-looking values, decoded together."""
    rng = np.random.default_rng(1)
    alphabet = np.array([chr(c) for c in range(48, 112)])
    short = np.array([chr(c) for c in range(48, 80)])  # one-character values only
    strings = []
    for i in range(3000):
        n = int(rng.integers(0, 12))
        pool = alphabet if i % 2 else short
        strings.append("".join(rng.choice(pool, n)))
    totals, areas = sums(strings)
    for s, total, area in zip(strings, totals.tolist(), areas.tolist()):
        ref = reference(s)
        if ref is None:
            assert total == -1, s
        else:
            assert (total, area) == ref, s
    assert (totals >= 0).sum() > 300  # a fair share of valid strings


@pytest.mark.parametrize("bad", [
    "",  # no counts at all: total 0
    "0" + "o" * 12,  # cut off after continuation characters
    "P",  # a single continuation character
    "PPPPPP0",  # a value of 7 characters
    "521M",  # count 3 = -3 + count 1 = -1
    "5?",  # count 1 = -1
    "52:",  # valid, but 17 pixels
    "5!3",  # character below '0'
    "5p3",  # character above 'o'
    "5\u00e93",  # not ASCII
])
def test_bad_strings_do_not_leak_into_neighbours(bad):
    good = mask_util.encode(np.asfortranarray(np.eye(7, dtype=np.uint8)))["counts"].decode("ascii")
    ref = reference(bad)
    totals = _rle_totals([good, bad, good, bad.encode("utf-8"), good])
    expected = -1 if ref is None else ref[0]
    assert totals.tolist() == [49, expected, 49, expected, 49]


def test_negative_counts_with_the_right_total_are_rejected():
    """Counts [10, 20, -5, 24]: they sum to 49, but pycocotools' IoU would loop forever on them."""
    counts = mask_util.frPyObjects({"size": [7, 7], "counts": [10, 20, 5, 14]}, 7, 7)["counts"].decode()
    assert _rle_totals([counts]).tolist() == [49]
    # re-encode with the third count -5 and the fourth 24 (deltas from index 3 on)
    def enc(x):
        out = ""
        while True:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            out += chr(c + (0x20 if more else 0) + 48)
            if not more:
                return out
    bad = enc(10) + enc(20) + enc(-5) + enc(24 - 20)
    assert reference(bad) is None
    assert _rle_totals([bad]).tolist() == [-1]


def test_long_strings_check_the_largest_count():
    """Over 2**17 values in one string: a count of 2**32 or more is rejected (no int64 wrap-around)."""
    n = (1 << 17) + 10
    counts = [1] * n
    counts[0] = 0
    rle = mask_util.frPyObjects({"size": [1, sum(counts)], "counts": counts}, 1, sum(counts))
    assert _rle_totals([rle["counts"]]).tolist() == [sum(counts)]
    # grow count 1 by 2**29 - 1 every other value until it passes 2**32
    huge = "0" + "1" + "0" + "".join(["ooooo?" if i % 2 == 0 else "0" for i in range(2 * 10)]) + "1" * n
    assert reference(huge) is not None and max_count(huge) >= 1 << 32
    assert _rle_totals([huge]).tolist() == [-1]


def max_count(s):
    """Largest count of a valid string (plain-Python decode)."""
    counts, p = [], 0
    while p < len(s):
        x = k = 0
        while True:
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            p, k = p + 1, k + 1
            if not c & 0x20:
                if c & 0x10:
                    x -= 1 << (5 * k)
                break
        counts.append(x + (counts[-2] if len(counts) > 2 else 0))
    return max(counts)
