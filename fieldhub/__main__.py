"""``python -m fieldhub``: the ``fieldhub`` command line."""

import sys

from fieldhub.cli import main

sys.exit(main())
