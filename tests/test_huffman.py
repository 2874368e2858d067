"""Entropy coding (operators/huffman.py): lossless on random and skewed codes, counted exactly."""

import numpy as np
import pytest

from operators import huffman


@pytest.mark.parametrize("alphabet,skew", [(2, 0.0), (16, 0.0), (64, 1.5), (256, 3.0), (32, 8.0)])
def test_huffman_round_trips_and_counts_exactly_what_it_stores(alphabet, skew):
    rng = np.random.default_rng(alphabet)
    p = np.exp(-skew * np.arange(alphabet) / alphabet)
    symbols = rng.choice(alphabet, size=20_000, p=p / p.sum())
    stream, lengths, payload = huffman.encode(symbols, alphabet)
    np.testing.assert_array_equal(huffman.decode(stream, lengths, len(symbols)), symbols)
    assert len(stream) == -(-payload // 8)
    assert huffman.huffman_bits(symbols, alphabet) == payload + alphabet * huffman.LENGTH_BITS
    # within one bit per symbol of the empirical entropy (Huffman's bound), never above fixed-width codes
    freq = np.bincount(symbols, minlength=alphabet) / len(symbols)
    entropy = -(freq[freq > 0] * np.log2(freq[freq > 0])).sum()
    assert entropy * len(symbols) <= payload <= (entropy + 1) * len(symbols)
    assert payload <= len(symbols) * int(np.ceil(np.log2(alphabet)))


def test_skewed_codes_get_fewer_bits_than_fixed_width():
    symbols = np.r_[np.zeros(9_000, int), np.arange(1_000) % 16]
    bits = huffman.huffman_bits(symbols, 16)
    assert bits < 0.5 * 4 * len(symbols)


def test_one_symbol_and_empty_inputs():
    stream, lengths, payload = huffman.encode(np.full(100, 3), 8)
    assert payload == 100 and lengths[3] == 1
    np.testing.assert_array_equal(huffman.decode(stream, lengths, 100), np.full(100, 3))
    stream, lengths, payload = huffman.encode(np.zeros(0, int), 8)
    assert payload == 0 and huffman.decode(stream, lengths, 0).size == 0
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        huffman.encode(np.array([8]), 8)


@pytest.mark.parametrize("bits", [1, 3, 5, 8])
def test_relative_indices_round_trip_with_fillers(bits):
    rng = np.random.default_rng(bits)
    mask = rng.random(5_000) < 0.03  # gaps often longer than 2**bits - 1
    mask[-1] = True
    gaps = huffman.relative_indices(mask, bits)
    assert gaps.max() <= (1 << bits) - 1 and (gaps != 0).sum() == mask.sum()
    np.testing.assert_array_equal(huffman.mask_from_relative(gaps, mask.size, bits), mask)
    assert huffman.relative_indices(np.zeros(10, bool), bits).size == 0


def test_decode_matches_a_symbol_by_symbol_reading_on_skewed_long_codes():
    """`decode` jumps by pointer doubling (it read one symbol per Python step: 4.7 s for 2M symbols); it must
    give what reading the stream code by code gives, long and short codes mixed, any count."""
    rng = np.random.default_rng(7)
    alphabet = 40
    p = 0.6 ** np.arange(alphabet)  # geometric: codes from 1 to over 20 bits
    for size in (1, 2, 3, 1000, 4097):
        symbols = rng.choice(alphabet, size=size, p=p / p.sum())
        stream, lengths, payload = huffman.encode(symbols, alphabet)
        codes = huffman.canonical_codes(lengths)
        by_code = {(int(lengths[s]), int(codes[s])): s for s in np.flatnonzero(lengths)}
        bits, pos, read = np.unpackbits(stream)[:payload], 0, []
        while len(read) < size:
            n, value = 0, 0
            while (n, value) not in by_code:
                value, n, pos = (value << 1) | int(bits[pos]), n + 1, pos + 1
            read.append(by_code[(n, value)])
        np.testing.assert_array_equal(huffman.decode(stream, lengths, size), read)
        np.testing.assert_array_equal(read, symbols)


def test_long_codes_decode_without_a_table_of_every_window(monkeypatch):
    """Fibonacci counts give codes as long as the alphabet: a 2**width lookup table grows with the longest code
    (2**31 entries at the format's limit); codes longer than TABLE_WIDTH are read by per-length canonical
    ranges, and give the symbols the table gives."""
    fib = [1, 1]
    while len(fib) < 22:
        fib.append(fib[-1] + fib[-2])
    symbols = np.repeat(np.arange(len(fib)), fib)
    np.random.default_rng(0).shuffle(symbols)
    stream, lengths, _ = huffman.encode(symbols, len(fib))
    assert lengths.max() == len(fib) - 1 > huffman.TABLE_WIDTH
    ranged = huffman.decode(stream, lengths, len(symbols))
    np.testing.assert_array_equal(ranged, symbols)
    monkeypatch.setattr(huffman, "TABLE_WIDTH", 24)  # the table reader (2M entries) on the same stream
    np.testing.assert_array_equal(huffman.decode(stream, lengths, len(symbols)), ranged)
