"""Entry point of `kubetrain-operator`; a placeholder until the operator (issue 4) lands."""

import sys


def main(argv: list[str] | None = None) -> int:
    print("kubetrain-operator: not implemented yet (the operator (issue 4))", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
