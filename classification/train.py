"""Entry point: `python classification/train.py ...` = `kerasemote classify train ...` (see --help)."""

import sys

from kerasemote.cli.classify import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
