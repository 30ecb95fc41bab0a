"""``python -m t2i_r1.cli COMMAND ...`` (what ``accelerate launch -m`` and ``torchrun -m`` run)."""

import sys

from t2i_r1.cli import main

sys.exit(main())
