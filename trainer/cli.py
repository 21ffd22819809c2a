"""``xai-train``: a thin shell over :class:`trainer.config.TrainConfig`.

    xai-train --recipe fast --out runs/fast            train (flags mirror the config fields)
    xai-train --resume runs/fast                       continue a killed run
    xai-train predict RUN_DIR                          recompute predictions.npz
    xai-train explain RUN_DIR                          precompute Grad-CAM for the test set
    xai-train models                                   list the model zoo
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from pathlib import Path

from trainer.augment import AugmentConfig
from trainer.config import RECIPES, TrainConfig, resolve

_SKIP = {"augment", "model_kwargs", "recipe"}


def _add_field(parser: argparse.ArgumentParser, f: dataclasses.Field, hints: dict) -> None:
    flag = "--" + f.name.replace("_", "-")
    typ = hints[f.name]
    args = typing.get_args(typ)
    base = next((a for a in args if a is not type(None)), typ) if args else typ
    if base is bool:
        parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS)
    else:
        parser.add_argument(flag, dest=f.name, type=base, default=argparse.SUPPRESS, metavar=f.name.upper())


def train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xai-train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", choices=sorted(RECIPES), default=None, help="named defaults; other flags override them")
    p.add_argument("--resume", metavar="RUN_DIR", default=None, help="continue from RUN_DIR/checkpoint (other flags ignored)")
    p.add_argument("--model-kwargs", dest="model_kwargs", type=json.loads, default=argparse.SUPPRESS,
                   help='JSON object of extra model arguments, e.g. \'{"dropout": 0.3}\'')
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        if f.name not in _SKIP:
            _add_field(p, f, hints)
    aug = p.add_argument_group("augmentation")
    aug_hints = typing.get_type_hints(AugmentConfig)
    for f in dataclasses.fields(AugmentConfig):
        _add_field(aug, f, aug_hints)
    return p


def config_from_args(argv: list[str]) -> tuple[TrainConfig | None, str | None]:
    args = vars(train_parser().parse_args(argv))  # unknown flags exit with an error
    recipe, resume = args.pop("recipe"), args.pop("resume")
    if resume:
        return None, resume
    aug_names = {f.name for f in dataclasses.fields(AugmentConfig)}
    aug_over = {k: args.pop(k) for k in list(args) if k in aug_names}
    base_aug = RECIPES.get(recipe, {}).get("augment", AugmentConfig()) if recipe else AugmentConfig()
    if aug_over:
        args["augment"] = dataclasses.replace(base_aug, **aug_over)
    return resolve(recipe, **args), None


def _run_subcommand(name: str, argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog=f"xai-train {name}")
    if name == "models":
        from trainer.models import get_spec, list_models

        for m in list_models():
            print(f"{m:20s} {get_spec(m).description}")
        return 0
    p.add_argument("run_dir")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--device", default="auto")
    if name == "explain":
        p.add_argument("--batch-size", type=int, default=256)
    args = p.parse_args(argv)
    if name == "predict":
        from trainer.repredict import repredict

        meta = repredict(Path(args.run_dir), args.data_dir, args.device)
        print(f"wrote {args.run_dir}/predictions.npz: test accuracy {meta['test_accuracy']:.4f}")
        return 0
    from xai_dashboard.precompute import precompute_gradcam

    path = precompute_gradcam(Path(args.run_dir), args.data_dir, batch_size=args.batch_size)
    print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from trainer.sources import DatasetUnavailable
    from trainer.rundir import RunDirError

    try:
        if argv and argv[0] in ("predict", "explain", "models"):
            return _run_subcommand(argv[0], argv[1:])
        from trainer.train import resume_config, train

        cfg, resume = config_from_args(argv)
        if resume:
            cfg = resume_config(Path(resume)).replace(out=resume)
        train(cfg, resume=bool(resume))
        return 0
    except (DatasetUnavailable, RunDirError, FileNotFoundError, ValueError) as e:
        print(f"xai-train: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
