import sys

from calc import main

sys.exit(main())
