"""Entry point of `kubetrain-train`; a placeholder until the trainer (issue 5) lands."""

import sys


def main(argv: list[str] | None = None) -> int:
    print("kubetrain-train: not implemented yet (the trainer (issue 5))", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
