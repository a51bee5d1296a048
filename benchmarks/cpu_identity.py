"""Do two CPUs compute the same bits? Prints a fingerprint of the kernels one training step uses, under
the current environment (set ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA, MKL_CBWR, OMP_NUM_THREADS before
running it; --no-mkldnn turns oneDNN off), and how often torch.sqrt is not correctly rounded.

    python benchmarks/cpu_identity.py [--no-mkldnn]

Run it on two machines with the same pins and compare the lines: an op whose hash differs is one the
pins do not make identical (benchmarks/README.md, "Across CPU kinds", has the findings).
"""
import argparse
import hashlib
import os

import torch
import torch.nn.functional as F


def _hash(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().contiguous().numpy().tobytes()).hexdigest()[:12]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-mkldnn", action="store_true", help="torch.backends.mkldnn.enabled = False")
    args = parser.parse_args()
    if args.no_mkldnn:
        torch.backends.mkldnn.enabled = False
    pins = {k: os.environ.get(k) for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR", "OMP_NUM_THREADS")}
    print(f"torch {torch.__version__}, kernels {torch.backends.cpu.get_cpu_capability()}, "
          f"{torch.get_num_threads()} threads, oneDNN {'on' if torch.backends.mkldnn.enabled else 'off'}, pins {pins}")
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(256, 512, generator=g), torch.randn(512, 300, generator=g)
    x, w = torch.randn(8, 32, 64, 64, generator=g), torch.randn(48, 32, 3, 3, generator=g)
    xx, ww = x.clone().requires_grad_(), w.clone().requires_grad_()
    F.conv2d(xx, ww, padding=1).square().sum().backward()
    ops = {
        "matmul (BLAS)": a @ b,
        "conv2d forward": F.conv2d(x, w, padding=1),
        "conv2d weight grad": ww.grad,
        "conv2d input grad": xx.grad,
        "batch_norm (train)": F.batch_norm(x, None, None, training=True),
        "log_softmax": F.log_softmax(x, 1),
        "bilinear upsample": F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True),
        "exp": torch.exp(a), "log": torch.log(a.abs() + 1), "tanh": torch.tanh(a),
        "sum over H, W": x.sum(dim=(2, 3)),
        "sqrt (as Adam's update)": torch.sqrt(a.abs()),
    }
    for name, t in ops.items():
        print(f"{name:26s} {_hash(t)}")
    big = torch.randn(100_000, generator=g).abs()
    wrong = int((torch.sqrt(big) != torch.sqrt(big.double()).float()).sum())
    print(f"torch.sqrt on 100000 float32 values: {wrong} not correctly rounded (IEEE asks for 0)")


if __name__ == "__main__":
    main()
