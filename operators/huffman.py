"""Lossless entropy coding of integer codes: canonical Huffman, and Deep Compression's relative indices.

Pure NumPy, for the last stage of a compression stack (codes of k-means, indices of a pruning mask): what is
stored is the bit stream plus a table of one code length per symbol, and `huffman_bits` counts exactly
those bits. Canonical codes (Deflate's construction, RFC 1951 3.2.2) need only the lengths to be rebuilt, so
the table is ``alphabet`` lengths of `LENGTH_BITS` bits each.

Relative indices (Han, Mao, Dally 2016, section 3): a pruning mask stored as the gaps between kept weights in
``bits``-bit numbers, a filler zero (one that stands for no kept weight) inserted whenever a gap exceeds
``2**bits - 1``. `relative_indices` builds them; they can themselves be Huffman-coded.
"""

from __future__ import annotations

import heapq

import numpy as np

LENGTH_BITS = 5
"""Bits stored per code length in a table: lengths up to 31 (longer codes are refused)."""
TABLE_WIDTH = 16
"""Longest code `decode` reads through a full lookup table (2**16 entries); longer codes use per-length ranges."""


def code_lengths(counts: np.ndarray) -> np.ndarray:
    """Huffman code lengths for symbol ``counts`` (0 for an unused symbol; a lone used symbol gets length 1).

    Args:
        counts: (alphabet,) non-negative integers.

    Returns:
        (alphabet,) int64 code lengths.

    Raises:
        ValueError: a count is negative, or a code would be longer than 2**LENGTH_BITS - 1 bits.
    """
    counts = np.asarray(counts, np.int64)
    if (counts < 0).any():
        raise ValueError("huffman: symbol counts must be non-negative")
    used = np.flatnonzero(counts)
    lengths = np.zeros(len(counts), np.int64)
    if len(used) == 1:
        lengths[used] = 1
        return lengths
    # heap of (weight, tie-breaker, symbols under this node); each merge deepens every symbol below it
    heap = [(int(counts[s]), int(s), [int(s)]) for s in used]
    heapq.heapify(heap)
    while len(heap) > 1:
        w1, t1, s1 = heapq.heappop(heap)
        w2, t2, s2 = heapq.heappop(heap)
        lengths[s1 + s2] += 1
        heapq.heappush(heap, (w1 + w2, min(t1, t2), s1 + s2))
    if lengths.max(initial=0) > 2 ** LENGTH_BITS - 1:
        raise ValueError(f"huffman: a code of {lengths.max()} bits does not fit the {LENGTH_BITS}-bit table")
    return lengths


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """The canonical code of each symbol (as an integer read MSB first), from its length (0: unused)."""
    lengths = np.asarray(lengths, np.int64)
    codes = np.zeros(len(lengths), np.int64)
    code, prev = 0, 0
    for s in sorted(np.flatnonzero(lengths), key=lambda s: (lengths[s], s)):
        code <<= int(lengths[s]) - prev
        prev = int(lengths[s])
        codes[s] = code
        code += 1
    return codes


def encode(symbols: np.ndarray, alphabet: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Huffman-code ``symbols`` (integers in [0, alphabet)).

    Returns:
        (packed bit stream as uint8, MSB first; code lengths (alphabet,) as uint8; number of payload bits).
    """
    symbols = np.asarray(symbols, np.int64).ravel()
    if symbols.size and (symbols.min() < 0 or symbols.max() >= alphabet):
        raise ValueError(f"huffman: symbols must be in [0, {alphabet})")
    lengths = code_lengths(np.bincount(symbols, minlength=alphabet))
    codes = canonical_codes(lengths)
    per = lengths[symbols]
    total = int(per.sum())
    if total == 0:
        return np.zeros(0, np.uint8), lengths.astype(np.uint8), 0
    # bit j of symbol i's code (MSB first) goes to position start_i + j
    starts = np.concatenate([[0], np.cumsum(per)[:-1]])
    width = int(per.max())
    j = np.arange(width)
    valid = j[None, :] < per[:, None]
    shift = per[:, None] - 1 - j[None, :]
    bits = (codes[symbols][:, None] >> np.where(valid, shift, 0)) & 1
    stream = np.zeros(total, np.uint8)
    stream[(starts[:, None] + j[None, :])[valid]] = bits[valid]
    return np.packbits(stream), lengths.astype(np.uint8), total


def decode(stream: np.ndarray, lengths: np.ndarray, count: int) -> np.ndarray:
    """Inverse of `encode`: ``count`` symbols from the packed stream and the code lengths."""
    lengths = np.asarray(lengths, np.int64)
    if count == 0:
        return np.zeros(0, np.int64)
    bits = np.unpackbits(np.asarray(stream, np.uint8))
    codes = canonical_codes(lengths)
    width = int(lengths.max())
    total = len(bits)
    padded = np.concatenate([bits, np.zeros(width, np.uint8)])
    # the `width`-bit window starting at every bit position
    dtype = np.int32 if width < 31 else np.int64
    window = np.zeros(total, dtype)
    for j in range(width):
        window = (window << 1) | padded[j:j + total]
    if width <= TABLE_WIDTH:
        # a lookup table over every window value: (symbol, length) of the code it starts with
        table_sym = np.full(1 << width, -1, np.int64)
        table_len = np.zeros(1 << width, np.int64)
        for s in np.flatnonzero(lengths):
            pad = width - int(lengths[s])
            lo = int(codes[s]) << pad
            table_sym[lo:lo + (1 << pad)] = s
            table_len[lo:lo + (1 << pad)] = lengths[s]
        sym_at, len_at = table_sym[window], table_len[window]
    else:
        sym_at, len_at = _canonical_lookup(window, width, lengths, codes)
    step = np.maximum(len_at, 1)  # (a window no code starts is never reached by a valid stream)
    after = np.minimum(np.arange(total, dtype=np.int64) + step, total).astype(np.int64)
    after = np.append(after, total)  # position `total`: past the end, where a valid stream stops
    # symbol i starts at after^i(0): jumps of 1, 2, 4, ... symbols composed by the bits of i (pointer
    # doubling: log2(count) vectorised passes instead of one Python step per symbol, 4.7 s for 2M symbols)
    starts = np.zeros(count, np.int64)
    index = np.arange(count, dtype=np.int64)
    jump = after
    for k in range(max(1, int(count - 1).bit_length())):
        move = ((index >> k) & 1).astype(bool)
        starts[move] = jump[starts[move]]
        jump = jump[jump]
    return sym_at[np.minimum(starts, total - 1)]


def _canonical_lookup(window: np.ndarray, width: int, lengths: np.ndarray,
                      codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(symbol, length) of the code each ``width``-bit window starts with, without a 2**width table.

    Canonical codes of one length are consecutive integers, and a window starts with a code of length L exactly
    when its first L bits fall in that length's range; the shortest such L wins (no code is a prefix of another).
    One vectorised pass per used length.
    """
    sym_at = np.full(len(window), -1, np.int64)
    len_at = np.zeros(len(window), np.int64)
    open_ = np.ones(len(window), bool)
    for length in np.unique(lengths[lengths > 0]):
        members = np.flatnonzero(lengths == length)
        members = members[np.argsort(codes[members], kind="stable")]
        first = int(codes[members[0]])
        prefix = window.astype(np.int64) >> (width - int(length))
        hit = open_ & (prefix >= first) & (prefix < first + len(members))
        sym_at[hit] = members[prefix[hit] - first]
        len_at[hit] = length
        open_ &= ~hit
    return sym_at, len_at


def huffman_bits(symbols: np.ndarray, alphabet: int) -> int:
    """Exactly the bits `encode` stores: the payload plus ``alphabet * LENGTH_BITS`` for the length table."""
    lengths = code_lengths(np.bincount(np.asarray(symbols, np.int64).ravel(), minlength=alphabet))
    counts = np.bincount(np.asarray(symbols, np.int64).ravel(), minlength=alphabet)
    return int((lengths * counts).sum()) + alphabet * LENGTH_BITS


def relative_indices(mask: np.ndarray, bits: int) -> np.ndarray:
    """A flat boolean mask as gaps between kept positions in ``bits``-bit numbers (Deep Compression's relative
    indices).

    Each kept position is stored as its distance from the previous one (the first from position -1), in
    [1, 2**bits - 1]. A longer distance is preceded by filler entries: the value 0, which no real gap takes,
    advances the position by ``2**bits - 1`` without keeping a weight (the paper stores a filler as a gap with
    a zero weight; a reserved 0 needs no weight value and is unambiguous).

    Args:
        mask: boolean array (flattened in C order).
        bits: the width of a stored gap, 1 to 16.

    Returns:
        (entries,) int64 gaps, one per kept weight plus one per filler.
    """
    if not 1 <= bits <= 16:
        raise ValueError(f"relative_indices: bits must be in [1, 16], got {bits}")
    top = (1 << bits) - 1
    kept = np.flatnonzero(np.asarray(mask).ravel())
    gaps = np.diff(np.concatenate([[-1], kept]))
    fillers = (gaps - 1) // top  # entries of 0 before each gap
    rest = gaps - fillers * top
    out = np.zeros(int(fillers.sum()) + len(gaps), np.int64)
    out[np.cumsum(fillers + 1) - 1] = rest
    return out


def mask_from_relative(gaps: np.ndarray, size: int, bits: int) -> np.ndarray:
    """Inverse of `relative_indices`: the flat boolean mask of ``size`` positions."""
    top = (1 << bits) - 1
    gaps = np.asarray(gaps, np.int64)
    steps = np.where(gaps == 0, top, gaps)
    positions = np.cumsum(steps) - 1
    mask = np.zeros(size, bool)
    mask[positions[gaps != 0]] = True
    return mask


# -- one stored stream: the cheapest of a few lossless encodings, counted exactly ---------------------------
TAG_BITS = 4
"""Bits that name a stream's encoding (raw, huffman, bytes, gaps with their width)."""
COUNT_BITS = 32
"""Bits that store the number of entries of a data-dependent sequence (relative indices)."""
GAP_WIDTHS = range(2, 9)
"""Widths of relative indices tried for a 0/1 stream (a pruning mask)."""


def _packed(symbols: np.ndarray, alphabet: int) -> np.ndarray:
    from operators._bits import code_bits, pack_codes

    return pack_codes(symbols, code_bits(alphabet))


def encodings(symbols: np.ndarray, alphabet: int) -> dict[str, int]:
    """Bits each candidate encoding of one stream stores, tag included.

    ``raw``: the bit-packed codes as the operator packs them; ``huffman``: the codes Huffman-coded; for a 0/1
    stream (alphabet 2) also ``bytes`` (the bit-packed bytes Huffman-coded) and ``gapsB`` (relative indices of
    B bits, Huffman-coded, with their count).
    """
    symbols = np.asarray(symbols, np.int64).ravel()
    out = {"raw": TAG_BITS + 8 * _packed(symbols, alphabet).size,
           "huffman": TAG_BITS + huffman_bits(symbols, alphabet)}
    if alphabet == 2:
        out["bytes"] = TAG_BITS + huffman_bits(_packed(symbols, 2), 256)
        for b in GAP_WIDTHS:
            out[f"gaps{b}"] = TAG_BITS + COUNT_BITS + huffman_bits(relative_indices(symbols > 0, b), 1 << b)
    return out


def encode_stream(symbols: np.ndarray, alphabet: int) -> dict[str, object]:
    """The cheapest encoding of a stream: ``{"method", "bits", "payload", "lengths", "count", "size",
    "alphabet"}`` where ``bits`` is exactly what is stored (tag, payload, table and any count; ``size`` and
    ``alphabet`` are known from the operator's shape and parameters)."""
    symbols = np.asarray(symbols, np.int64).ravel()
    costs = encodings(symbols, alphabet)
    method = min(costs, key=lambda k: (costs[k], k))
    if method == "raw":
        payload, lengths, count = _packed(symbols, alphabet), np.zeros(0, np.uint8), symbols.size
    elif method == "huffman":
        payload, lengths, _ = encode(symbols, alphabet)
        count = symbols.size
    elif method == "bytes":
        data = _packed(symbols, 2)
        payload, lengths, _ = encode(data, 256)
        count = data.size
    else:
        gaps = relative_indices(symbols > 0, int(method[4:]))
        payload, lengths, _ = encode(gaps, 1 << int(method[4:]))
        count = gaps.size
    return {"method": method, "bits": costs[method], "payload": payload, "lengths": lengths, "count": count,
            "size": symbols.size, "alphabet": alphabet}


def decode_stream(coded: dict[str, object], size: int, alphabet: int) -> np.ndarray:
    """Inverse of `encode_stream`: the ``size`` symbols."""
    from operators._bits import code_bits

    method, payload, count = str(coded["method"]), np.asarray(coded["payload"]), int(coded["count"])  # type: ignore[arg-type]
    if method == "raw":
        bits = code_bits(alphabet)
        flat = np.unpackbits(payload.astype(np.uint8), bitorder="little")[: size * bits].reshape(size, bits)
        return (flat.astype(np.int64) << np.arange(bits)).sum(1)
    if method == "huffman":
        return decode(payload, coded["lengths"], count)  # type: ignore[arg-type]
    if method == "bytes":
        data = decode(payload, coded["lengths"], count).astype(np.uint8)  # type: ignore[arg-type]
        return np.unpackbits(data, bitorder="little")[:size].astype(np.int64)
    b = int(method[4:])
    gaps = decode(payload, coded["lengths"], count)  # type: ignore[arg-type]
    return mask_from_relative(gaps, size, b).astype(np.int64)
