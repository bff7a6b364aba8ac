import sys

from secsuite.cli import main

sys.exit(main())
