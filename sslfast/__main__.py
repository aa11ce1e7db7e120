import sys

from sslfast.cli import main

sys.exit(main())
