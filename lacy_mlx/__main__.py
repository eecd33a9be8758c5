"""``python -m lacy_mlx`` runs the command line."""
import sys

from lacy_mlx.cli import main

sys.exit(main())
