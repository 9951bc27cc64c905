"""
Reference outputs and gradients of multi-head self-attention alone, for
test_attention.cu (llmc/attention.cuh).

For each case (B, NH, T, hs, causal), C = NH * hs: a random packed qkv
(B, T, 3C) in the layout the qkv Linear writes (q, k, v each C wide, head h
in channels [h*hs, (h+1)*hs)) and a random upstream gradient dout (B, T, C);
then, in float64 from those float32 values,
    out  = concat_h softmax(q_h k_h^T / sqrt(hs), masked to keys <= query
           when causal) v_h                                   (B, T, C)
    dqkv = d(sum(out * dout)) / d qkv                          (B, T, 3C)
by autograd, stored as float32.

The file is a reference state (dev/reference/formats.py) of model kind 0
(no model: the config slots are 0, B = T = 1); its tensors are, per case i,
    case{i}.dims  int32 [B, NH, T, hs, causal]
    case{i}.qkv, case{i}.dout, case{i}.out, case{i}.dqkv
and "cases" int32 [number of cases].

Usage:
    python dev/reference/attention.py --out data/ref_attention.bin [--check]
"""

import argparse
import math
import os
import struct
import sys

import numpy as np
import torch

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import formats  # noqa: E402

# (B, NH, T, hs, causal): causal and not (the ViT's), T below, at and past the
# kernels' 16/32/64-row tiles and not a multiple of them, hs 8..128
CASES = [
    (2, 2, 37, 16, 1),
    (1, 3, 70, 32, 0),
    (2, 1, 100, 64, 1),
    (1, 2, 64, 64, 0),
    (1, 1, 1, 16, 1),
    (1, 1, 33, 128, 1),
    (3, 4, 17, 8, 0),
    (1, 2, 129, 32, 1),
    (1, 2, 200, 16, 0),
    (1, 1, 530, 16, 1),  # causal with 8 query blocks in the materialized products
]


def attention(qkv, B, NH, T, hs, causal):
    """qkv (B,T,3C) float64 -> out (B,T,C), the plain materialized formula."""
    C = NH * hs
    q, k, v = qkv.split(C, dim=2)
    q = q.view(B, T, NH, hs).transpose(1, 2)  # (B,NH,T,hs)
    k = k.view(B, T, NH, hs).transpose(1, 2)
    v = v.view(B, T, NH, hs).transpose(1, 2)
    scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))  # (B,NH,T,T)
    if causal:
        mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
        scores = scores.masked_fill(~mask, float("-inf"))
    att = torch.softmax(scores, dim=-1)
    y = att @ v  # (B,NH,T,hs)
    return y.transpose(1, 2).contiguous().view(B, T, C)


def make_case(gen, B, NH, T, hs, causal):
    C = NH * hs
    # scale 1.5: scores of spread ~2 per row, so that rows range from nearly
    # uniform to peaked and the online softmax's rescaling is exercised
    qkv32 = (1.5 * torch.randn(B, T, 3 * C, generator=gen)).float()
    dout32 = torch.randn(B, T, C, generator=gen).float()
    qkv = qkv32.double().requires_grad_(True)
    out = attention(qkv, B, NH, T, hs, causal)
    (out * dout32.double()).sum().backward()
    return qkv32, dout32, out.detach(), qkv.grad.detach()


def write_attention_state(path, tensors):
    """A reference state of kind 0 (no model), as formats.write_state lays it out."""
    chunks = []
    for name, arr in tensors:
        arr = np.asarray(arr)
        dtype = formats.DTYPE_INT32 if np.issubdtype(arr.dtype, np.integer) else formats.DTYPE_FLOAT32
        shape = list(arr.shape) + [0] * (formats.STATE_MAX_NDIM - arr.ndim)
        nb = name.encode("utf-8")
        assert 1 <= len(nb) < formats.STATE_NAME_BYTES and 1 <= arr.ndim <= formats.STATE_MAX_NDIM
        chunks.append(nb.ljust(formats.STATE_NAME_BYTES, b"\0") + struct.pack("<6i", dtype, arr.ndim, *shape))
        chunks.append(np.ascontiguousarray(arr, dtype=formats.DTYPE_NUMPY[dtype]).tobytes())
    header = formats._new_header(formats.MAGIC_STATE)
    header[10] = 1  # B
    header[11] = 1  # T
    header[12] = len(tensors)
    formats._write_file(path, [header.tobytes()] + chunks)


def read_tensors(path):
    """name -> array of a state written above (for --check)."""
    data = open(path, "rb").read()
    header = np.frombuffer(data[:formats.HEADER_BYTES], dtype="<i4")
    assert header[0] == formats.MAGIC_STATE and header[1] == formats.VERSION
    pos, out = formats.HEADER_BYTES, {}
    for _ in range(header[12]):
        name = data[pos:pos + formats.STATE_NAME_BYTES].rstrip(b"\0").decode()
        dtype, ndim, *shape = struct.unpack("<6i", data[pos + formats.STATE_NAME_BYTES:pos + formats.STATE_RECORD_HEADER_BYTES])
        pos += formats.STATE_RECORD_HEADER_BYTES
        shape = shape[:ndim]
        n = int(np.prod(shape))
        out[name] = np.frombuffer(data[pos:pos + 4 * n], dtype=formats.DTYPE_NUMPY[dtype]).reshape(shape)
        pos += 4 * n
    assert pos == len(data), f"{path}: {len(data) - pos} trailing bytes"
    return out


def check(path):
    """Re-derives every case's out and dqkv with an independent per-head loop."""
    t = read_tensors(path)
    for i in range(int(t["cases"][0])):
        B, NH, T, hs, causal = (int(x) for x in t[f"case{i}.dims"])
        C = NH * hs
        qkv = torch.tensor(t[f"case{i}.qkv"], dtype=torch.float64, requires_grad=True)
        dout = torch.tensor(t[f"case{i}.dout"], dtype=torch.float64)
        outs = []
        for h in range(NH):
            q = qkv[:, :, h * hs:(h + 1) * hs]
            k = qkv[:, :, C + h * hs:C + (h + 1) * hs]
            v = qkv[:, :, 2 * C + h * hs:2 * C + (h + 1) * hs]
            s = torch.einsum("btd,bsd->bts", q, k) / math.sqrt(hs)
            if causal:
                s = s + torch.triu(torch.full((T, T), float("-inf"), dtype=torch.float64), diagonal=1)
            outs.append(torch.einsum("bts,bsd->btd", torch.softmax(s, dim=-1), v))
        out = torch.cat(outs, dim=2)
        (out * dout).sum().backward()
        e_out = np.abs(out.detach().numpy() - t[f"case{i}.out"]).max() / np.abs(t[f"case{i}.out"]).max()
        e_grad = np.abs(qkv.grad.numpy() - t[f"case{i}.dqkv"]).max() / np.abs(t[f"case{i}.dqkv"]).max()
        assert e_out < 1e-6 and e_grad < 1e-6, f"case {i}: rel errors {e_out:.2e} {e_grad:.2e}"
    print(f"checked {path}: {int(t['cases'][0])} cases")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="data/ref_attention.bin", help="reference state file to write")
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--check", action="store_true", help="read the state back and verify it")
    args = parser.parse_args()
    gen = torch.Generator().manual_seed(args.seed)
    tensors = [("cases", np.array([len(CASES)], dtype=np.int32))]
    for i, (B, NH, T, hs, causal) in enumerate(CASES):
        qkv, dout, out, dqkv = make_case(gen, B, NH, T, hs, causal)
        tensors += [(f"case{i}.dims", np.array([B, NH, T, hs, causal], dtype=np.int32)),
                    (f"case{i}.qkv", qkv.numpy()), (f"case{i}.dout", dout.numpy()),
                    (f"case{i}.out", out.numpy()), (f"case{i}.dqkv", dqkv.numpy())]
    write_attention_state(args.out, tensors)
    print(f"wrote {args.out}: {len(CASES)} cases")
    if args.check:
        check(args.out)


if __name__ == "__main__":
    main()
