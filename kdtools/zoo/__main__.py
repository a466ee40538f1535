"""``python -m kdtools.zoo {list|verify|train NAME [--epochs N] [--out DIR]}``."""
import argparse
from pathlib import Path

from . import CHECKPOINTS, MANIFEST, RECIPES, ChecksumError, ManifestError, available, train_checkpoint, verify


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m kdtools.zoo", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="shipped checkpoints and their test accuracy")
    sub.add_parser("verify", help="check every shipped checkpoint against its sha256")
    train = sub.add_parser("train", help="re-train a checkpoint from its recipe and update the manifest")
    train.add_argument("name", choices=sorted(RECIPES))
    train.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs (for a quick try)")
    train.add_argument("--out", type=Path, default=None,
                       help="write the checkpoint and a manifest.json into DIR instead of the installed package "
                            "(load it with zoo.load(NAME, checkpoint_dir=DIR, manifest_path=DIR/'manifest.json'))")
    args = parser.parse_args()
    try:
        if args.command == "list":
            for name, entry in available().items():
                print(f"{name}: {entry['recipe']['architecture']}, test accuracy {entry['test_accuracy']:.2f}% "
                      f"({entry['recipe']['epochs']} epochs, seed {entry['recipe']['seed']})")
            return 0
        if args.command == "verify":
            bad = 0
            for name in available():
                try:
                    print(f"ok   {name}: {verify(name)}")
                except (ChecksumError, ManifestError) as err:
                    bad += 1
                    print(f"FAIL {err}")
            return 1 if bad else 0
        checkpoint_dir, manifest = (args.out, args.out / "manifest.json") if args.out else (CHECKPOINTS, MANIFEST)
        entry = train_checkpoint(args.name, checkpoint_dir=checkpoint_dir, manifest_path=manifest, epochs=args.epochs)
    except (ManifestError, PermissionError) as err:
        parser.exit(2, f"error: {err}\n")
    print(f"{args.name}: test accuracy {entry['test_accuracy']:.2f}% ({entry['test_errors']} errors), "
          f"sha256 {entry['sha256']}, {entry['train_seconds']} s -> {Path(checkpoint_dir) / entry['file']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
