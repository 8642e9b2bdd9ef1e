import sys

from cfbox_watch.bench.cli import main

sys.exit(main())
