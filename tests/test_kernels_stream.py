"""Stream kernels against torch references at odd sizes (interpreter on the CPU)."""

import pytest
import torch

from ridgeline.kernels import stream

SIZES = [1, 4097, 12_289]  # below, just above and a few blocks past BLOCK


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_copy_matches_reference(kernel_device, n, dtype):
    src = torch.randn(n, device=kernel_device).to(dtype)
    dst = torch.zeros_like(src)
    stream.copy(src, dst)
    assert torch.equal(dst, src)


@pytest.mark.parametrize("n", SIZES)
def test_read_partials_sum_to_reference(kernel_device, n):
    src = torch.randn(n, device=kernel_device)
    partials = stream.read_partials(src)
    assert partials.numel() == -(-n // stream.BLOCK)
    torch.testing.assert_close(partials.sum(), stream.read_ref(src), rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("n", SIZES)
def test_write_fills_every_element(kernel_device, n):
    dst = torch.zeros(n, device=kernel_device)
    stream.write(dst, 2.5)
    assert torch.all(dst == 2.5)


@pytest.mark.parametrize("n", SIZES)
def test_triad_matches_reference(kernel_device, n):
    b, c = torch.randn(n, device=kernel_device), torch.randn(n, device=kernel_device)
    a, expected = torch.empty_like(b), torch.empty_like(b)
    stream.triad(a, b, c, 0.4)
    stream.triad_ref(expected, b, c, 0.4)
    torch.testing.assert_close(a, expected)


def test_kernels_reject_mismatched_sizes(kernel_device):
    with pytest.raises(ValueError):
        stream.copy(torch.zeros(10, device=kernel_device), torch.zeros(11, device=kernel_device))


def test_byte_counts_follow_babelstream():
    n, e = 1_000_000, 4
    assert stream.bytes_moved("copy", n, e) == (4_000_000, 4_000_000)      # 1 read + 1 write
    assert stream.bytes_moved("triad", n, e) == (8_000_000, 4_000_000)     # 2 reads + 1 write
    assert stream.bytes_moved("write", n, e) == (0, 4_000_000)
    read, written = stream.bytes_moved("read", n, e)
    assert read == 4_000_000 and written == 4 * 245  # ceil(1e6 / 4096) fp32 partials
    assert stream.working_set_bytes("triad", n, e) == 12_000_000
    with pytest.raises(ValueError):
        stream.bytes_moved("dot", n, e)
