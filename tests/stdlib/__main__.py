import sys

from tests.stdlib.runner import main

sys.exit(main())
