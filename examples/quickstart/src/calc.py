"""A tiny calculator: the project that Sorat's quick start builds, tests and ships."""

import operator
import sys

OPERATORS = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
}

VERSION = "1.0.0"


def evaluate(left, symbol, right):
    """Applies the operator `symbol` to two numbers."""
    if symbol not in OPERATORS:
        raise ValueError(f"unknown operator {symbol!r}; use one of {' '.join(OPERATORS)}")
    result = OPERATORS[symbol](float(left), float(right))
    return int(result) if result == int(result) else result


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--version"]:
        print(VERSION)
        return 0
    if len(argv) != 3:
        print("usage: calc NUMBER OPERATOR NUMBER", file=sys.stderr)
        return 2
    try:
        print(evaluate(*argv))
    except (ValueError, ZeroDivisionError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
