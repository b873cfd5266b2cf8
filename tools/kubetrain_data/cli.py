"""Entry point of `kubetrain-data`; a placeholder until dataset tools (issue 3) lands."""

import sys


def main(argv: list[str] | None = None) -> int:
    print("kubetrain-data: not implemented yet (dataset tools (issue 3))", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
