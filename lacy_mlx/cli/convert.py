"""``lacy-mlx convert SRC --out DIR``: a PyTorch / Hugging Face checkpoint to an MLX folder."""
from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert", help="convert a PyTorch / Hugging Face checkpoint to MLX",
        description="Convert a Hugging Face folder (safetensors, sharded, pytorch_model.bin), a raw "
        ".pt/.pth state dict beside config.json, or a GGUF file into a folder mlx_lm.load and lacy-mlx load.",
    )
    p.add_argument("src", help="checkpoint folder, a .pt/.pth/.bin file next to config.json, or a .gguf file")
    p.add_argument("--out", required=True, help="output folder (must not exist unless --overwrite)")
    p.add_argument("--dtype", choices=["float16", "bfloat16", "float32"], default=None,
                   help="output dtype (default: the config's torch_dtype, else as stored)")
    p.add_argument("--quantize", type=int, choices=[4, 8], default=None, help="MLX affine quantization bits")
    p.add_argument("--group-size", type=int, choices=[32, 64, 128], default=64, help="quantization group size (default 64)")
    p.add_argument("--dequantize", action="store_true",
                   help="GGUF: write float weights (--dtype, default float32) instead of keeping Q4_0/Q4_1/Q8_0")
    p.add_argument("--add-call-token", action="store_true",
                   help="add <CALL>, <EVIDENCE>, </EVIDENCE> to the tokenizer and the embeddings")
    p.add_argument("--verify", action="store_true",
                   help="compare with the PyTorch model (needs torch + transformers; GGUF: also the gguf "
                   "package); exit 1 above tolerance")
    p.add_argument("--max-shard-size", default="5GB", help="largest safetensors file before sharding (default 5GB)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    p.add_argument("--json", action="store_true", help="print the result as one JSON line")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lacy_mlx.convert import convert

    result = convert(
        args.src, args.out, dtype=args.dtype, quantize=args.quantize, group_size=args.group_size,
        add_call_token=args.add_call_token, verify=args.verify, max_shard_size=args.max_shard_size,
        overwrite=args.overwrite, dequantize=args.dequantize,
    )
    if args.json:
        print(json.dumps({
            "out": str(result.out), "model_type": result.model_type, "kind": result.kind,
            "dtype": result.dtype, "quantization": result.quantization, "files": list(result.files),
            "lacy": result.lacy.to_json(), "seconds": round(result.seconds, 3),
            "verify": None if result.verify is None else result.verify.__dict__,
        }))
        return 0
    quant = f", {result.quantization['bits']}-bit" if result.quantization else ""
    print(f"converted {result.model_type} ({result.kind}, {result.dtype}{quant}) "
          f"-> {result.out} in {result.seconds:.1f}s")
    if result.lacy.call_token_id is not None:
        print(f"special tokens: {json.dumps(result.lacy.to_json())}")
    if result.verify is not None:
        print(result.verify.describe())
    return 0
