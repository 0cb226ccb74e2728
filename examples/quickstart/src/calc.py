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


def serve(port):
    """Serves the calculator over HTTP: `/calc?q=2+*+3`, `/version`, `/healthz`."""
    import http.server
    import urllib.parse

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            url = urllib.parse.urlsplit(self.path)
            if url.path == "/healthz":
                code, body = 200, "ok"
            elif url.path == "/version":
                code, body = 200, VERSION
            elif url.path == "/calc":
                query = urllib.parse.parse_qs(url.query).get("q", [""])[0].split()
                try:
                    code, body = 200, str(evaluate(*query))
                except (TypeError, ValueError, ZeroDivisionError) as error:
                    code, body = 400, f"error: {error}"
            else:
                code, body = 404, "try /calc?q=2+%2B+3"
            data = (body + "\n").encode()
            self.send_response(code)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format, *args):
            print(format % args, flush=True)

    server = http.server.HTTPServer(("127.0.0.1", port), Handler)
    print(f"calc {VERSION} serving on http://127.0.0.1:{port}", flush=True)
    server.serve_forever()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--version"]:
        print(VERSION)
        return 0
    if argv == ["serve"]:
        import os

        serve(int(os.environ.get("PORT", "8000")))
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
