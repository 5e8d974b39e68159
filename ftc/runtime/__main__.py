"""`python -m ftc.runtime --config PATH/ftc.resolved.json [--output_dir DIR] [--<parameter> VALUE ...]`."""

import sys

from ftc.runtime.main import main

sys.exit(main())
