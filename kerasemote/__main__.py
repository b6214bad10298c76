import sys

from kerasemote.cli import main

sys.exit(main())
