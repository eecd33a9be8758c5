"""``lacy-mlx train``: train a LaCy model (or fine-tune one) from a config file or a preset."""
from __future__ import annotations

import argparse
import json

from lacy_mlx.train.config import PRESETS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a small model to emit <CALL> (LaCy objective, evidence copying, query tower)",
        description="Train on the synthetic knowledge corpus with the LaCy objective (or a baseline). "
        "The output folder loads with mlx_lm.load and lacy-mlx. Under `mlx.launch -n N --backend ring` "
        "it trains data-parallel.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", metavar="FILE", help="JSON or YAML file of TrainConfig keys")
    src.add_argument("--preset", choices=tuple(PRESETS), help="a built-in configuration (demo-copy: stage 2 of the demo model, with --set init_from=RUN)")
    p.add_argument("--out", required=True, metavar="DIR", help="run folder: checkpoints, log, exported model")
    p.add_argument("--resume", action="store_true", help="continue exactly from the newest checkpoint in --out")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (JSON value), e.g. --set steps=200 --set objective=\"loss\"")
    p.add_argument("--stop-at", type=int, default=None, metavar="STEP", help="stop this run at that update step")
    p.set_defaults(func=run)


def _overrides(pairs: list[str]) -> dict:
    from lacy_mlx.errors import InputError

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise InputError(f"--set expects KEY=VALUE, got {pair!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value  # bare strings: --set objective=loss
    return out


def run(args: argparse.Namespace) -> int:
    from lacy_mlx.train.config import load_config, make_config
    from lacy_mlx.train.finetune import finetune
    from lacy_mlx.train.trainer import train

    if args.stop_at is not None and args.stop_at < 1:
        from lacy_mlx.errors import InputError

        raise InputError(f"--stop-at must be an update step >= 1, got {args.stop_at}")
    overrides = _overrides(args.set)
    if args.config:
        cfg = make_config({**load_config(args.config).to_dict(), **overrides})
    else:
        cfg = make_config({"preset": args.preset, **overrides})
    if cfg.init_from:
        result = finetune(cfg, args.out, resume=args.resume, stop_at=args.stop_at)
    else:
        result = train(cfg, args.out, resume=args.resume, stop_at=args.stop_at)
    last = result.log[-1] if result.log else {}
    print(json.dumps({"out": str(result.out_dir), "step": result.step, **last}))
    return 0
