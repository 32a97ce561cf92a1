"""`python -m wrapper` is `severus`."""
import sys

from .cli import main

sys.exit(main())
