"""Convert a PyTorch / Hugging Face checkpoint to MLX, check it, and generate from it.

    python examples/convert_pytorch.py path/to/hf-model mlx/out --dtype float16 --verify
    python examples/convert_pytorch.py path/to/hf-model mlx/out --quantize 4 --add-call-token

``--verify`` (needs torch and transformers: ``pip install 'lacy-mlx[convert]'``) compares the
PyTorch model's logits with the converted model's on a probe and fails above tolerance.
"""
from __future__ import annotations

import argparse
import sys

import lacy_mlx
from lacy_mlx.convert import convert


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src")
    p.add_argument("out")
    p.add_argument("--dtype", choices=["float16", "bfloat16", "float32"])
    p.add_argument("--quantize", type=int, choices=[4, 8])
    p.add_argument("--add-call-token", action="store_true")
    p.add_argument("--verify", action="store_true")
    p.add_argument("--prompt", default="The capital of France is")
    args = p.parse_args(argv)

    result = convert(args.src, args.out, dtype=args.dtype, quantize=args.quantize,
                     add_call_token=args.add_call_token, verify=args.verify, overwrite=True)
    print(f"wrote {args.out}: {', '.join(str(f) for f in result.files)}")
    if result.verify is not None:
        print(f"verify: {result.verify.describe()}")
    if result.lacy is not None and result.lacy.call_token_id is not None:
        print(f"<CALL> id {result.lacy.call_token_id}")
    lacy = lacy_mlx.load(args.out, gate=lacy_mlx.GateConfig(mode="off"))
    print(f"{args.prompt!r} -> {lacy.generate(args.prompt, max_tokens=12).text!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
