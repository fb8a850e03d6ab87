"""`python -m mobilevision COMMAND ...` (also under torchrun: `torchrun ... -m mobilevision train ...`)."""
import sys

from mobilevision.cli import main

sys.exit(main())
