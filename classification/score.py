"""Entry point: `python classification/score.py ...` = `kerasemote classify score ...` (see --help)."""

import sys

from kerasemote.cli.classify import main

if __name__ == "__main__":
    sys.exit(main(["score", *sys.argv[1:]]))
