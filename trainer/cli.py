"""``xai-train``: a thin shell over :class:`trainer.config.TrainConfig`.

    xai-train --recipe fast --out runs/fast            train (flags mirror the config fields)
    xai-train --resume runs/fast                       continue a killed run
    xai-train predict RUN_DIR                          recompute predictions.npz
    torchrun --nproc_per_node N -m trainer.cli predict RUN_DIR    the same, sharded over N processes
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
from trainer.config import CHOICES, RANGES, RECIPES, TrainConfig, flag, resolve

_SKIP = {"augment", "model_kwargs", "recipe"}

DATASETS_HELP = """\
datasets (--dataset):
  cifar10           cifar10_{train,test}.npz from --data-dir or $XAI_DATA_DIR, else downloaded once
                    by torchvision into ~/.cache/xai-dashboard
  digits            scikit-learn's 8x8 digits, upscaled to --input-size (default 32); works offline
  imagefolder:PATH  your images, read from disk in --workers processes, one folder per class:
                      PATH/train/CLASS/*.png|jpg|...   training images (any size and mode)
                      PATH/test/CLASS/*                test images (PATH/val/ is accepted too)
                    each resized (shorter side) to --input-size (default 32) and centre-cropped;
                    unreadable files are skipped with one warning
"""

# One line of help per TrainConfig / AugmentConfig field; a test checks none is missing.
HELP = {
    "model": "network from the model zoo (`xai-train models` describes each)",
    "dataset": "cifar10, digits or imagefolder:PATH (see 'datasets' below)",
    "data_dir": "folder with cifar10_{train,test}.npz (default: $XAI_DATA_DIR)",
    "input_size": "image side in pixels for digits/imagefolder (resize + centre crop; default 32)",
    "train_subset": "train on the first N training images only (image folders: N spread over the classes)",
    "test_subset": "evaluate on the first N test images only (image folders: N spread over the classes)",
    "val_fraction": "share of the training images held out for validation",
    "pretrained": "start from ImageNet weights (torchvision models only; downloads once)",
    "workers": "processes decoding imagefolder images (default: the number of CPU cores)",
    "epochs": "number of passes over the training images (fractions allowed)",
    "batch_size": "images per optimisation step",
    "optimizer": "optimiser",
    "lr": "peak learning rate",
    "momentum": "SGD momentum / Adam beta1",
    "nesterov": "Nesterov momentum (SGD)",
    "weight_decay": "L2 weight decay",
    "loss_reduction": "mean: lr per batch; sum: lr per example",
    "bias_lr_scale": "BatchNorm/whitening biases: lr times this, weight decay divided by it",
    "muon_lr": "muon optimiser: step size of the convolution filters (renormalised every step)",
    "muon_momentum": "muon optimiser: momentum of the convolution filters (SGD groups use --momentum)",
    "muon_ns_steps": "muon optimiser: Newton-Schulz iterations orthogonalising each filter update",
    "schedule": "learning-rate schedule",
    "warmup_fraction": "triangle/onecycle: share of the steps spent warming up",
    "lr_end": "triangle: final lr as a fraction of the peak",
    "step_size": "step schedule: epochs between decays",
    "gamma": "step schedule: decay factor",
    "label_smoothing": "label smoothing of the cross-entropy",
    "patience": "stop after N epochs without validation-loss improvement (0: off)",
    "class_weighting": "weight the loss by inverse class frequency",
    "oversample": "sample every class equally often",
    "teacher": "run directory of a teacher to distil from",
    "distill_temperature": "distillation softmax temperature",
    "distill_alpha": "weight of the soft-target (KL) term",
    "distill_cosine": "weight of the hidden-feature cosine term (0: off)",
    "lookahead_every": "every k steps average the weights (lookahead EMA; 0: off)",
    "whiten_bias_epochs": "fast model: epochs during which the whitening bias trains",
    "tta": "also report test accuracy with mirror/shift test-time augmentation",
    "augmix": "AugMix (Hendrycks et al. 2020): two augmented views of every image and a Jensen-Shannon "
              "consistency loss between the predictions (about 3x the compute per step)",
    "augmix_weight": "AugMix: weight of the Jensen-Shannon consistency term (12 in the paper)",
    "seed": "random seed (data order, augmentation, initialisation)",
    "device": "auto, cpu, cuda or cuda:N",
    "precision": "autocast precision",
    "channels_last": "channels-last memory layout",
    "out": "run directory to write; must be new or empty unless --overwrite",
    "translate": "random shift by up to N pixels after padding (0: off)",
    "pad_mode": "padding for the shift",
    "flip": "horizontal mirroring (alternate: each image mirrored every other epoch)",
    "cutout": "side of a random zeroed square (0: off)",
    "jitter": "brightness/contrast jitter strength (0: off)",
    "rotate": "random rotation up to N degrees (0: off)",
}


class _Parser(argparse.ArgumentParser):
    """Errors are one line (no usage dump, no traceback) and exit with status 2."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_field(parser: argparse.ArgumentParser, f: dataclasses.Field, hints: dict, choices: dict) -> None:
    typ = hints[f.name]
    args = typing.get_args(typ)
    base = next((a for a in args if a is not type(None)), typ) if args else typ
    options = choices.get(f.name)
    help_ = HELP[f.name] + (f"; one of: {', '.join(options)}" if options else "")
    help_ += f"; {RANGES[f.name]}" if f.name in RANGES else ""
    if base is bool:
        parser.add_argument(flag(f.name), dest=f.name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                            help=help_)
    else:
        parser.add_argument(flag(f.name), dest=f.name, type=base, default=argparse.SUPPRESS, choices=options,
                            metavar=f.name.upper(), help=help_)


def train_parser() -> argparse.ArgumentParser:
    from trainer.models import list_models

    p = _Parser(prog="xai-train", description=__doc__, epilog=DATASETS_HELP, allow_abbrev=False,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", choices=sorted(RECIPES), default=None, metavar="RECIPE",
                   help=f"named defaults that other flags override; one of: {', '.join(sorted(RECIPES))}")
    p.add_argument("--resume", metavar="RUN_DIR", default=None,
                   help="continue from RUN_DIR/checkpoint (other flags ignored)")
    p.add_argument("--overwrite", action="store_true",
                   help="train into a non-empty --out: replace the files a previous run wrote there, keep all others")
    p.add_argument("--model-kwargs", dest="model_kwargs", type=json.loads, default=argparse.SUPPRESS,
                   help='JSON object of extra model arguments, e.g. \'{"dropout": 0.3}\'')
    choices = {**CHOICES, "model": tuple(list_models())}
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        if f.name not in _SKIP:
            _add_field(p, f, hints, choices)
    aug = p.add_argument_group("augmentation")
    aug_hints = typing.get_type_hints(AugmentConfig)
    for f in dataclasses.fields(AugmentConfig):
        _add_field(aug, f, aug_hints, choices)
    return p


def parse_train_args(argv: list[str]) -> tuple[TrainConfig | None, str | None, bool]:
    """(config, run dir to resume or None, overwrite); bad flags exit with one line and status 2."""
    args = vars(train_parser().parse_args(argv))
    recipe, resume, overwrite = args.pop("recipe"), args.pop("resume"), args.pop("overwrite")
    if resume:
        return None, resume, False
    aug_names = {f.name for f in dataclasses.fields(AugmentConfig)}
    aug_over = {k: args.pop(k) for k in list(args) if k in aug_names}
    base_aug = RECIPES.get(recipe, {}).get("augment", AugmentConfig()) if recipe else AugmentConfig()
    if aug_over:
        args["augment"] = dataclasses.replace(base_aug, **aug_over)
    cfg = resolve(recipe, **args)
    if cfg.pretrained:
        _check_pretrained(cfg.model)
    return cfg, None, overwrite


def config_from_args(argv: list[str]) -> tuple[TrainConfig | None, str | None]:
    """(config, run dir to resume or None): :func:`parse_train_args` without the overwrite flag."""
    cfg, resume, _ = parse_train_args(argv)
    return cfg, resume


def _check_pretrained(model: str) -> None:
    import inspect

    from trainer.models import get_spec, list_models

    if "pretrained" not in inspect.signature(get_spec(model).builder).parameters:
        able = [m for m in list_models() if "pretrained" in inspect.signature(get_spec(m).builder).parameters]
        raise ValueError(f"--pretrained: {model} has no pretrained weights; models that have them: {', '.join(able)}")


def _run_subcommand(name: str, argv: list[str]) -> int:
    if name == "models":
        from trainer.models import get_spec, list_models

        for m in list_models():
            print(f"{m:20s} {get_spec(m).description}")
        return 0
    p = _Parser(prog=f"xai-train {name}", allow_abbrev=False,
                description="recompute RUN_DIR/predictions.npz; under `torchrun --nproc_per_node N -m trainer.cli "
                            "predict RUN_DIR` each process predicts a shard and rank 0 writes")
    p.add_argument("run_dir", help="run directory written by xai-train")
    p.add_argument("--data-dir", default=None, help="folder with the dataset files (default: $XAI_DATA_DIR)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (under torchrun: cuda:LOCAL_RANK)")
    args = p.parse_args(argv)
    from trainer.repredict import repredict

    meta = repredict(Path(args.run_dir), args.data_dir, args.device)
    if meta is not None:  # rank 0 (or the only process) wrote the file
        print(f"wrote {args.run_dir}/predictions.npz: test accuracy {meta['test_accuracy']:.4f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "explain":
        run = argv[1] if len(argv) > 1 else "RUN_DIR"
        print(f"xai-train: error: `xai-train explain` has moved: run `xai-dashboard precompute gradcam {run}`",
              file=sys.stderr)
        return 2
    from trainer.models.transfer import PretrainedWeightsError
    from trainer.rundir import RunDirError
    from trainer.sources import DatasetUnavailable

    try:
        if argv and argv[0] in ("predict", "models"):
            return _run_subcommand(argv[0], argv[1:])
        from trainer.runtime import keep_freed_memory
        from trainer.train import resume_config, train

        cfg, resume, overwrite = parse_train_args(argv)
        keep_freed_memory()  # this process only trains: ~38% more images/s on the CPU
        if resume:
            cfg = resume_config(Path(resume)).replace(out=resume)
        train(cfg, resume=bool(resume), overwrite=overwrite)
        return 0
    except (DatasetUnavailable, RunDirError, PretrainedWeightsError, FileNotFoundError, ValueError) as e:
        print(f"xai-train: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
