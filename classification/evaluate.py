"""Entry point: `python classification/evaluate.py ...` = `kerasemote classify evaluate ...` (see --help)."""

import sys

from kerasemote.cli.classify import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
