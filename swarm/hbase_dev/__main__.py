"""``python -m swarm.hbase_dev``: the HBase development server (a test stand-in, never a production store)."""
import sys

from swarm.hbase_dev import main

sys.exit(main())
