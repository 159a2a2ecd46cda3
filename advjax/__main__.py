import sys

from advjax.cli import main

sys.exit(main())
