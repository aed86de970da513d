import sys

from popjax.cli import main

sys.exit(main())
