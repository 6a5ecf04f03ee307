"""The ``fashion-search`` command line.

Each package contributes its subcommands through a ``commands`` module with a
``register(commands)`` function; heavy imports (torch, faiss) happen inside the handlers so
that ``--help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from dataclasses import dataclass

COMMAND_MODULES = ("cli.indexer", "cli.attributes", "cli.detector", "cli.search", "cli.webui", "cli.scaling")


@dataclass
class Commands:
    top: argparse._SubParsersAction
    train: argparse._SubParsersAction
    evaluate: argparse._SubParsersAction
    convert: argparse._SubParsersAction


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fashion-search",
        description="Visual fashion search: index a product dump, then search it by photo.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    top = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    train = top.add_parser("train", help="train a model").add_subparsers(dest="model", metavar="MODEL", required=True)
    evaluate = top.add_parser("evaluate", help="measure a model or the whole search").add_subparsers(
        dest="target", metavar="TARGET", required=True
    )
    convert = top.add_parser("convert", help="turn a real dataset's layout into product dumps").add_subparsers(
        dest="dataset", metavar="DATASET", required=True
    )
    commands = Commands(top, train, evaluate, convert)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not args.verbose:  # faiss logs each CPU-feature build it tries and skips
        logging.getLogger("faiss.loader").setLevel(logging.WARNING)
        for name in ("onnx_ir", "onnxscript"):  # ONNX export logs each of its graph passes
            logging.getLogger(name).setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, FileExistsError, PermissionError, ConnectionError) as exc:
        # Bad input is the user's to fix: say what, without a traceback.
        print(f"fashion-search: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
