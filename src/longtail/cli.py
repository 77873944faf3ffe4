"""The ``longtail`` command."""

from __future__ import annotations

import argparse
import os
import sys

from longtail import __version__


def cmd_train(args: argparse.Namespace) -> int:
    from longtail.config import load_config
    from longtail.evaluation.tables import format_results
    from longtail.run import is_rank_zero, train

    if args.resume and (args.config or args.overrides):
        raise ValueError("--resume continues a run with its own config: give no --config or key=value")
    config = None if args.resume else load_config(args.config or [], args.overrides, getattr(args, "base", None))
    if config is not None and getattr(args, "base", None) is not None:
        check_self_supervised(config)
    run_dir, metrics = train(config, progress=not args.no_progress, resume=args.resume)
    if not is_rank_zero():
        return 0
    print(f"\n{metrics['method']} on {metrics['dataset']}: {metrics['epochs']} epochs, "
          f"{metrics['wall_s']:.0f} s, {metrics['images_per_s']:.0f} images/s\n")
    if metrics.get("probe"):
        print(f"the method trains no classifier: tested by the {metrics['probe']}")
    print(format_results(metrics["test"], metrics["classes"], metrics["train_counts"],
                         metrics["many"], metrics["few"]))
    print(f"\nrun directory: {run_dir}")
    return 0


#: ``longtail pretrain``'s defaults: SimCLR on two SimAugment views, probed by k-NN every 5 epochs.
PRETRAIN_BASE = {"method": {"name": "simclr"}, "data": {"views": ["sim", "sim"]}, "eval": {"knn_every": 5}}


def cmd_pretrain(args: argparse.Namespace) -> int:
    """``longtail train`` for a self-supervised method: the labels only evaluate."""
    args.base = PRETRAIN_BASE
    return cmd_train(args)


def check_self_supervised(config) -> None:
    from longtail.config import method_class
    from longtail.errors import ConfigError
    from longtail.methods import METHODS, SelfSupervised

    if not issubclass(method_class(config.method["name"]), SelfSupervised):
        choices = ", ".join(name for name, entry in METHODS.items() if issubclass(entry.method, SelfSupervised))
        raise ConfigError(f"method.name: longtail pretrain trains a self-supervised method ({choices}); "
                          f"for {config.method['name']!r} use longtail train")


def cmd_eval(args: argparse.Namespace) -> int:
    from longtail.evaluation import summarize
    from longtail.evaluation.tables import format_results
    from longtail.run import evaluate

    if isinstance(args.posthoc, float):  # --posthoc TAU, the earlier form: la at that tau
        args.posthoc, args.tau = "la", args.posthoc
    evaluation = evaluate(args.path, progress=not args.no_progress, overrides=args.overrides,
                          features=args.posthoc == "tau_norm" or args.knn is not None)
    if not evaluation.method.trains_classifier:
        return eval_pretraining(args, evaluation)
    info, outputs = evaluation.info, evaluation.outputs
    many, few = evaluation.config.eval.many, evaluation.config.eval.few
    results = evaluation.results
    if args.resample:
        results = summarize(outputs.logits, outputs.targets, info["class_counts"], many, few,
                            resamples=args.resample)
        print(f"test-agnostic accuracy: the mean over {args.resample} random test subsets per distribution")
    print(format_results(results, info["classes"], info["class_counts"], many, few))
    if args.posthoc is not None:
        print()
        print(posthoc_table(args, evaluation))
    if args.knn is not None:
        print()
        print(knn_table(args, evaluation))
    return 0


def eval_pretraining(args: argparse.Namespace, evaluation) -> int:
    """``longtail eval`` of a self-supervised pre-training: its classifier is untrained, so
    the k-NN probe of its features is its test (at the run's k unless ``--knn`` names one)."""
    from longtail.errors import ConfigError

    if args.posthoc is not None:
        raise ConfigError(f"--posthoc: {args.path} is a self-supervised pre-training, whose classifier is untrained; "
                          f"correct the run of its linear probe or fine-tuning instead")
    args.knn = args.knn or evaluation.config.eval.knn_k
    print(f"{args.path} is a self-supervised pre-training, tested by the k-NN probe of its features (its classifier "
          f"is untrained: a linear probe or fine-tuning trains one, with model.init_from={args.path})")
    print(knn_table(args, evaluation))
    return 0


def knn_table(args: argparse.Namespace, evaluation) -> str:
    """The test results of a weighted k-NN on the backbone's features, the un-augmented
    training set as neighbours: a probe of the representation that trains nothing."""
    from longtail.evaluation.knn import KNN_TEMPERATURE
    from longtail.evaluation.tables import format_results
    from longtail.run import knn_results

    info, config = evaluation.info, evaluation.config
    results = knn_results(args.path, evaluation, args.knn, overrides=args.overrides, resamples=args.resample)
    return (f"k-NN on the backbone's features (k {args.knn}, temperature {KNN_TEMPERATURE:g}, the un-augmented "
            f"training set as neighbours):\n"
            + format_results(results, info["classes"], info["class_counts"], config.eval.many, config.eval.few))


#: Post-hoc corrections of ``longtail eval --posthoc``: name -> what they are.
POSTHOC = {
    "la": "post-hoc logit adjustment to the uniform prior (Menon et al., ICLR 2021)",
    "norcal": "NorCal: probabilities divided by the class counts to the gamma (Pan et al., NeurIPS 2021)",
    "tau_norm": "tau-normalised classifier weights (Kang et al., ICLR 2020)",
}


def posthoc_table(args: argparse.Namespace, evaluation) -> str:
    """The test results after the correction ``args.posthoc`` at ``args.tau``, or at the
    tau chosen on the validation split (never on the test split)."""
    from longtail.evaluation import summarize
    from longtail.evaluation.posthoc import choose_tau
    from longtail.evaluation.tables import format_results
    from longtail.run import evaluate, posthoc_logits, rebalanced_in_training

    name, tau = args.posthoc, args.tau
    info, method, config = evaluation.info, evaluation.method, evaluation.config
    counts = info["class_counts"]
    if name in ("la", "norcal") and method.logits_prior == "uniform":
        return f"{POSTHOC[name]}: nothing to adjust, the logits were trained with a balanced loss"
    posthoc_logits(name, evaluation, 0.0)  # a correction the run cannot take is refused before any work
    chosen = ""
    if tau is None:
        if not evaluation.has_validation:
            tau, chosen = 1.0, "tau 1: the data has no validation split to choose it on (never on the test split)"
        else:
            validation = evaluate(args.path, progress=False, features=True, split="val", overrides=args.overrides)
            tau = choose_tau(lambda t: posthoc_logits(name, validation, t), validation.outputs.targets)
            chosen = f"tau {tau:g}, chosen on the validation split (balanced accuracy, 0 to 2 by 0.1)"
    results = summarize(posthoc_logits(name, evaluation, tau), evaluation.outputs.targets, counts,
                        config.eval.many, config.eval.few, resamples=args.resample)
    moved = rebalanced_in_training(config)
    note = (f"\n(the run was trained with {moved}: its logits do not model the training prior, and a "
            "correction toward the uniform prior may go too far)") if moved and name != "tau_norm" else ""
    return (f"{POSTHOC[name]}, {chosen or f'tau {tau:g}'}:{note}\n"
            + format_results(results, info["classes"], counts, config.eval.many, config.eval.few))


def posthoc_choice(text: str) -> str | float:
    """``--posthoc``'s value: a correction's name, or (the earlier form) ``la``'s tau."""
    if text in POSTHOC:
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"choose one of {', '.join(sorted(POSTHOC))}, or la's tau") from None


def cmd_report(args: argparse.Namespace) -> int:
    from longtail.evaluation.report import build_report

    print(f"wrote {build_report(args.run_dir)}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from pathlib import Path

    from longtail.evaluation.tables import compare_table, read_metrics, run_names

    run_dirs = [Path(d) for d in args.run_dirs]
    runs = {name: read_metrics(d) for name, d in zip(run_names(run_dirs), run_dirs)}
    print(compare_table(runs, args.format), end="")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import csv
    import json

    from longtail.predict import deployment_prior, image_files, load_model, predict

    method, info = load_model(args.checkpoint)
    files = image_files(args.paths)
    target = deployment_prior(args.prior, info) if args.prior else None
    writer = csv.writer(sys.stdout) if args.format == "csv" else None
    if writer:
        writer.writerow(["path", "rank", "class", "probability"])
    records, failed = [], 0
    for path, outcome in predict(method, info, files, args.top_k, target):
        if isinstance(outcome, str):
            failed += 1
            print(f"longtail: skipped {path}: {outcome}", file=sys.stderr)
        elif writer:
            writer.writerows([str(path), rank, name, f"{p:.6f}"] for rank, (name, p) in enumerate(outcome, 1))
        else:
            records.append({"path": str(path), "predictions": [{"class": n, "probability": p} for n, p in outcome]})
    if not writer:
        print(json.dumps(records, indent=2))
    if failed:
        print(f"longtail: {failed} of {len(files)} files could not be read", file=sys.stderr)
    return 0 if failed < len(files) else 2


def cmd_data_info(args: argparse.Namespace) -> int:
    from longtail.config import load_config
    from longtail.data import shot_groups
    from longtail.run import read_data

    config = load_config(args.config or [], args.overrides)
    splits = read_data(config, decode=False)
    counts = splits.train.counts()
    groups = shot_groups(counts, config.eval.many, config.eval.few)
    order = sorted(range(len(counts)), key=lambda c: -counts[c])
    print(f"{config.dataset_name}: {len(counts)} classes, {len(splits.train)} training images, "
          f"{len(splits.test)} test images"
          + (f", {len(splits.val)} validation images" if splits.val is not None else ""))
    print(f"imbalance factor {max(counts) / max(1, min(counts)):.1f} "
          f"(largest {max(counts)}, smallest {min(counts)}); "
          + ", ".join(f"{g} {groups.count(g)}" for g in ("many", "medium", "few"))
          + f" classes (many: >{config.eval.many}, few: <{config.eval.few})\n")
    width = min(24, max(len(name) for name in splits.train.classes))
    for c in order:
        bar = "#" * max(1, round(40 * counts[c] / max(counts)))
        print(f"  {splits.train.classes[c][:width]:<{width}} {counts[c]:>7} {groups[c]:>6}  {bar}")
    print()
    for split in ("train", "val", "test"):
        if getattr(splits, split) is not None:
            print(f"{split}: {getattr(splits, split).storage}")
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    from longtail.config import loss_options, method_options
    from longtail.data import SAMPLERS
    from longtail.losses import CLASSIFICATION_LOSSES
    from longtail.methods import METHODS
    from longtail.models import BACKBONES

    def first_line(obj) -> str:
        return (obj.__doc__ or "").strip().splitlines()[0]

    def arguments(options: dict) -> str:
        return ", ".join(f"{key}={p.default!r}" for key, p in options.items()) or "no arguments"

    sections = {
        "methods (method.name; method.* arguments; default loss.name)": {
            name: f"{entry.description} [{arguments(method_options(name))}; loss {entry.loss}]"
            for name, entry in METHODS.items()
        },
        "classification losses (loss.name; loss.* arguments)": {
            name: f"{first_line(cls)} [{arguments(loss_options(name))}]"
            for name, cls in CLASSIFICATION_LOSSES.items()
        },
        "samplers (data.sampler)": SAMPLERS,
        "backbones (model.backbone)": {
            **{name: text for name, (_, text) in BACKBONES.items()},
            "timm:<name>": "any timm model, randomly initialised",
        },
    }
    for title, entries in sections.items():
        print(title)
        width = max(map(len, entries))
        for name, text in entries.items():
            print(f"  {name:<{width}}  {text}")
        print()
    return 0


def at_least(minimum: int):
    """An argparse type: an integer of at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


class OneLineParser(argparse.ArgumentParser):
    """argparse, with a usage error told in one line (exit 2) as every other error is."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="longtail", description="Long-tailed image classification: BCL and the field's methods."
    )
    parser.add_argument("--version", action="version", version=f"longtail {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser(
        "train", help="train a model (default: BCL on Digits-LT)",
        description="Train a model. Config keys: see the README; e.g. optim.epochs=10 method.name=ce.",
    )
    train.add_argument("--config", action="append", metavar="FILE", help="YAML config; repeat to merge in order")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. optim.lr=0.1")
    train.set_defaults(run=cmd_train)

    pretrain = commands.add_parser(
        "pretrain", help="pre-train a backbone without labels (default: SimCLR on Digits-LT)",
        description="Pre-train a backbone with a self-supervised method (method.name=simclr|moco_v2|byol|sdclr|twist|"
                    "swav|boosted_simclr|boosted_sdclr); the labels, when there are any, only evaluate: the run is "
                    "tested by a k-NN probe of its features.",
    )
    pretrain.add_argument("--config", action="append", metavar="FILE", help="YAML config; repeat to merge in order")
    pretrain.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint")
    pretrain.add_argument("--no-progress", action="store_true", help="no progress bar")
    pretrain.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. optim.lr=0.1")
    pretrain.set_defaults(run=cmd_pretrain)

    evaluate = commands.add_parser("eval", help="re-evaluate a run directory or checkpoint on its test set")
    evaluate.add_argument("path", metavar="RUN_DIR|CHECKPOINT")
    evaluate.add_argument("--posthoc", nargs="?", type=posthoc_choice, const="la",
                          help="also report after a post-hoc correction: " + "; ".join(
                              f"{k}: {v}" for k, v in POSTHOC.items()) + " (la when named alone)")
    evaluate.add_argument("--tau", type=float, metavar="TAU",
                          help="the correction's strength; by default chosen on the validation split, else 1")
    evaluate.add_argument("--knn", nargs="?", type=at_least(1), const=200, metavar="K",
                          help="also classify by a weighted k-NN on the backbone's features, the training set as "
                               "neighbours (K 200, temperature 0.1)")
    evaluate.add_argument("--resample", type=at_least(0), default=0, metavar="N",
                          help="test-agnostic accuracy as the mean over N random test subsets, not exact weights")
    evaluate.add_argument("--no-progress", action="store_true", help="no progress bar")
    evaluate.add_argument("overrides", nargs="*", metavar="data.key=value",
                          help="read other data than the checkpoint names, e.g. data.root=path/to/data")
    evaluate.set_defaults(run=cmd_eval)

    report = commands.add_parser("report", help="write RUN_DIR/report.html: plots of the run's results")
    report.add_argument("run_dir", metavar="RUN_DIR")
    report.set_defaults(run=cmd_report)

    compare = commands.add_parser("compare", help="one table of several runs, the best of each column marked")
    compare.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    compare.add_argument("--format", choices=("md", "csv", "html"), default="md")
    compare.set_defaults(run=cmd_compare)

    predict = commands.add_parser("predict", help="top-k classes of images or folders of images")
    predict.add_argument("checkpoint", metavar="CHECKPOINT", help="a run directory, .ckpt or .safetensors")
    predict.add_argument("paths", nargs="+", metavar="PATH", help="images or folders")
    predict.add_argument("--top-k", type=at_least(1), default=5, help="classes per image (at least 1)")
    predict.add_argument("--prior", help="deployment prior: uniform, train or a JSON file of class weights")
    predict.add_argument("--format", choices=("csv", "json"), default="csv")
    predict.set_defaults(run=cmd_predict)

    data = commands.add_parser("data", help="inspect a data set").add_subparsers(dest="data_command", required=True)
    info = data.add_parser(
        "info", help="classes, counts, imbalance factor, shot split and a histogram of class sizes"
    )
    info.add_argument("--config", action="append", metavar="FILE", help="YAML config; repeat to merge in order")
    info.add_argument("overrides", nargs="*", metavar="key=value", help="data.* overrides, e.g. data.imbalance_factor=100")
    info.set_defaults(run=cmd_data_info)

    methods = commands.add_parser("methods", help="list every method, loss, sampler and backbone")
    methods.set_defaults(run=cmd_methods)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # key=value overrides may come before and after options: gather them all
    args, extra = parser.parse_known_args(argv)
    unknown = [token for token in extra if "=" not in token or token.startswith("-")]
    if unknown or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(unknown or extra)}")
    if extra:
        args.overrides += extra
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    from longtail.progress import quiet_lightning  # Lightning loads after --help and usage errors

    quiet_lightning()
    try:
        return args.run(args)
    except BrokenPipeError:  # the output was piped into a reader that stopped (head)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ValueError, OSError, MisconfigurationException) as error:
        if os.environ.get("LONGTAIL_DEBUG"):
            raise
        print(f"longtail: error: {one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("longtail: interrupted", file=sys.stderr)
        return 130


def one_line(error: Exception) -> str:
    """The error's first line; for an error raised in a loader process, which PyTorch
    wraps in its traceback, the original message (the traceback's last line)."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    if lines[0].startswith("Caught ") and "DataLoader worker" in lines[0]:
        return lines[-1].split(": ", 1)[-1]
    return lines[0]


if __name__ == "__main__":
    sys.exit(main())
