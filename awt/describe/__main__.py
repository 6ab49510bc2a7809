"""`python -m awt.describe --classes FILE --out FILE ...` (the same as `awt describe`)."""

import sys

from awt.describe.command import main

sys.exit(main())
