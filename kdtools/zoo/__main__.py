"""``python -m kdtools.zoo {list|verify|train NAME [--epochs N]}``."""
import argparse

from . import RECIPES, ChecksumError, available, train_checkpoint, verify


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m kdtools.zoo", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="shipped checkpoints and their test accuracy")
    sub.add_parser("verify", help="check every shipped checkpoint against its sha256")
    train = sub.add_parser("train", help="re-train a checkpoint from its recipe and update the manifest")
    train.add_argument("name", choices=sorted(RECIPES))
    train.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs (for a quick try)")
    args = parser.parse_args()
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
            except ChecksumError as err:
                bad += 1
                print(f"FAIL {err}")
        return 1 if bad else 0
    entry = train_checkpoint(args.name, epochs=args.epochs)
    print(f"{args.name}: test accuracy {entry['test_accuracy']:.2f}% ({entry['test_errors']} errors), "
          f"sha256 {entry['sha256']}, {entry['train_seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
