"""`python -m engine.cli`: the same as the `recipe` command."""
import sys

from .main import main

sys.exit(main())
