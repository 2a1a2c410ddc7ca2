"""`python -m diffupose ...`: the same as the `diffupose` command."""
import sys

from .cli import main

sys.exit(main())
